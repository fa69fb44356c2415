"""gridbot: the live bot, its sizing core and its command line."""

from bot._numba_cache import use_versioned_cache

use_versioned_cache()
