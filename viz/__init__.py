"""Pictures: a small presentation layer that ``pipeline``, ``model`` and ``cli`` may all use (never imports
``hipnet.model``)."""
