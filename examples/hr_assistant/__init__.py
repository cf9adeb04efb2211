"""The HR knowledge-base assistant: retrieval over the staff handbook, answered through Menshen.

``python -m examples.hr_assistant ingest DIR`` embeds the handbook into a local SQLite file;
``python -m examples.hr_assistant ask "question"`` streams a cited answer. See docs/examples/hr-assistant.md.
"""

from examples.hr_assistant.cli import main

__all__ = ["main"]
