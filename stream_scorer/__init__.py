"""ja4-stream scorer: real-time bot detection on JA4 feature records.

Data flows one way: bytes (:mod:`.parsing`) -> feature matrix -> scores (:mod:`.ensemble`,
pure) -> score records (:mod:`.agents`). The bundle format (:mod:`.bundle`) is shared with
the trainer.
"""

__version__ = "0.1.0"
