"""Temporary AWS credentials, and what the gateway and local programs do with them.

- ``model``: the credentials (secrets never in a repr), the answers of Ioto's ``getCreds``
  and of AWS IoT's credentials provider, and the shapes SDKs read (``credential_process``,
  the container credential provider);
- ``store``: the copy in ``state_dir`` (0600, written atomically) for restarts and the CLI;
- ``provider``: fetching and refreshing them (before expiry, with backoff; expired ones are
  never handed out);
- ``serving``: the loopback endpoint for ``AWS_CONTAINER_CREDENTIALS_FULL_URI``;
- ``sigv4``: AWS Signature Version 4 (hmac/hashlib; no botocore in the daemon);
- ``cloudwatch``: shipping the gateway's log lines to CloudWatch Logs;
- ``service``: all of it wired for the daemon's task group.

May import: ``updates.http`` (the HTTP client), ``core``, ``config``. Never logs a secret.
"""
