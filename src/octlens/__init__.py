"""octlens: is my retinal OCT classifier looking at the retina, or at the corner of the screen?

The package is laid out in the order of the pipeline, and no module imports one further down it:
``data`` -> ``models`` -> ``training`` -> ``explain`` -> ``audit`` -> ``evaluate`` ->
``report`` -> ``app`` -> ``cli``.
"""

__version__ = "0.1.0"
