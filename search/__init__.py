"""The orchestrator: specs, the Ray Tune search, MLflow tracking, results and export.

    from search import run_search
    result = run_search("spaces/quickstart.yaml", samples=8)
    print(result.best.config, result.best.best_value)
"""
from search.spec import SearchSpec, load_spec
from search.tuner import SearchResult, resume_search, run_search

__all__ = ["SearchSpec", "SearchResult", "load_spec", "resume_search", "run_search"]
