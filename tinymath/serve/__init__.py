"""tinymath.serve: a local web page and JSON API that ask every loaded model side by side (`tinymath serve`).

Needs the `serve` extra (starlette, uvicorn): pip install 'tinymath[serve]'. No torch.
"""
