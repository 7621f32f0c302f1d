"""`blur-retrieval serve`: search an index over HTTP, from a JSON API or a web page.

FastAPI and uvicorn are an optional extra (`pip install -e '.[serve]'`), so only `app` and
`limits` import them, and only once the command runs; `search` and `live` are plain Python.
"""
