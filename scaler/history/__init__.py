"""Job history for `garo simulate`: one format (record.py), and the ways to fill it.

`export` pulls it from GitHub's REST API, `importer` rebuilds it from the
embedded bus or the webhook's JSON logs, `generate` makes synthetic traces
(marked as such) for tests and demos.
"""
