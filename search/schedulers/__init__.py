"""Trial schedulers (temporary re-export while the package is split)."""
from search.schedulers.promotion import *  # noqa: F401,F403
from search.schedulers.promotion import FINISH_EARLIEST, PromotionASHA, end_pauses, load_state, rank_score, rung_levels  # noqa: F401
from search.schedulers.virtual_clock import ReproducibleASHA  # noqa: F401
