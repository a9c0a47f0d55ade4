"""kdcore's Gradio app: a thin UI over :mod:`kdcore` (``build_demo`` builds it, ``launch`` serves it)."""

from kdcore_app.demo import build_demo, launch

__all__ = ["build_demo", "launch"]
