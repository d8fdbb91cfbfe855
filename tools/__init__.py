"""Scripts run from the checkout (``python -m tools.<name>``); no training run imports them."""
