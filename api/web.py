"""The web front door (the full inbox is built separately); for now a landing page."""
from __future__ import annotations

from typing import Any

from flask import Flask, render_template_string

_INDEX = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>ItemGate 事项接入管理</title></head>
<body><h1>ItemGate 事项接入管理</h1>
<p>政务服务事项接入全流程管理：任务、交付物、工作量与结算。</p>
<ul><li><a href="/api/v1/openapi.json">API (OpenAPI)</a></li><li><a href="/readyz">服务状态</a></li></ul>
</body></html>"""


def register(app: Flask) -> None:
    @app.get("/")
    def index() -> Any:
        return render_template_string(_INDEX)
