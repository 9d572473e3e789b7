"""my-bert-is-too-big: distil a fine-tuned BERT into small students and measure what it costs."""

__version__ = "0.1.0"
