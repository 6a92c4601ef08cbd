"""Request-level enforcement of the authorization matrix: every endpoint needs an entry; deny by default."""
from __future__ import annotations

from typing import Any

from flask import Flask, abort, g, request

from api.errors import problem
from engine.policy import RULES, rule_for_endpoint


def request_user() -> Any:
    """The caller: the bearer-token user of the API, else the web session user (Flask-Login), else None."""
    user = g.get("user")
    if user is not None:
        return user
    if request.path.startswith("/api/"):
        return None
    try:
        from flask_login import current_user
    except ImportError:  # pragma: no cover - Flask-Login is a dependency
        return None
    if getattr(current_user, "is_authenticated", False):
        return getattr(current_user, "_get_current_object", lambda: current_user)()
    return None


def register(app: Flask) -> None:
    @app.before_request
    def _authorize() -> Any:
        if request.endpoint is None or request.method == "OPTIONS":
            return None  # routing answers 404/405 itself; OPTIONS reveals only the allowed methods
        rule = rule_for_endpoint(request.endpoint, request.method)
        if rule is None:
            return problem(403, "no_policy", f"endpoint {request.endpoint} has no entry in the authorization "
                           "matrix (engine/policy.py); denied by default")
        if rule.public:
            return None
        user = request_user()
        if user is None:
            login_manager = getattr(app, "login_manager", None)
            if not request.path.startswith("/api/") and login_manager is not None \
                    and getattr(login_manager, "login_view", None):
                return login_manager.unauthorized()
            return problem(401, "unauthorized", "authentication required")
        if not rule.allows(getattr(user, "role", None)):
            if not request.path.startswith("/api/"):
                abort(403, description=f"your role may not {rule.summary}")
            return problem(403, "role_required", f"your role ({user.role}) may not {rule.summary}",
                           action=rule.action)
        g.authz_action = rule.action
        return None


def check_cli(command: str) -> None:
    """CLI commands run as the operator; an unlisted command is refused like an unlisted endpoint."""
    import click

    from engine.policy import CLI_COMMANDS, CLI_ROLE

    action = CLI_COMMANDS.get(command)
    if action is None:
        raise click.ClickException(f"command {command!r} has no entry in the authorization matrix")
    rule = RULES[action]
    if not rule.allows(CLI_ROLE):
        raise click.ClickException(f"the command line may not {rule.summary}")
