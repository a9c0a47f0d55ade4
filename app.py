"""kdcore's Gradio app on the bundled models, offline: ``python app.py`` (also the Space's entry point)."""

from kdcore_app import launch

if __name__ == "__main__":
    launch()
