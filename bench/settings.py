"""Settings for the benchmark's processes: the portal's own, plus two bench-only changes.

- ROOT_URLCONF adds the inline-callback baseline view (bench/baseline_urls.py) beside the
  product's URLs; the product's urls.py never carries it.
- STATIC_ROOT is the bench's own folder, so its `collectstatic` (DEBUG is off, which needs the
  manifest) neither needs nor touches the checkout's staticfiles/.

Everything else (database, broker, AWS endpoint, queue) comes from the environment like the
product's: bench/run.py sets it for the web, the workers and itself.
"""

from portal.settings import *  # noqa: F403
from portal.settings import VAR_DIR

ROOT_URLCONF = "bench.baseline_urls"
STATIC_ROOT = VAR_DIR / "bench" / "static"

# Optional, for the "what would close it" runs in docs/benchmarks.md: Celery's Django fixup closes
# every database connection before and after each task unless CELERY_DB_REUSE_MAX is set, so
# each task opens a new PostgreSQL connection. BENCH_CELERY_DB_REUSE_MAX=<n> measures the fix.
if env.int("BENCH_CELERY_DB_REUSE_MAX", default=0):  # noqa: F405 - portal.settings' env
    CELERY_DB_REUSE_MAX = env.int("BENCH_CELERY_DB_REUSE_MAX")  # noqa: F405
