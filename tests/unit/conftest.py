"""Hypothesis settings: no per-example deadline and no "too slow" check, because CI shares two
cores with a broker and other tests; the examples and assertions are unchanged."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150
)
settings.load_profile("gateway")
