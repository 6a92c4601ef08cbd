"""REST API v1: background export jobs (status and progress)."""
from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from api.auth import current_user
from api.extensions import db
from engine.usecases.jobs import job_json, load_job_for
from storage.models import utcnow

blp = Blueprint("jobs", __name__, url_prefix="/api/v1", description="Background export jobs")


@blp.route("/jobs/<int:job_id>", methods=["GET"])
@blp.response(200)
def jobs_get(job_id: int) -> dict[str, Any]:
    return job_json(load_job_for(db.session, current_user(), job_id), utcnow())
