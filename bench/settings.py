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
