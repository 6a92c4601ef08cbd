"""User-task forms: one marshmallow schema per form key; they validate input and describe fields to UIs."""
from __future__ import annotations

from typing import Any

from apispec.ext.marshmallow.field_converter import FieldConverterMixin
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from packaging.version import Version

NOTES = {"title": "备注", "title_en": "Notes"}


def _notes(required: bool = False) -> fields.String:
    return fields.String(required=required, load_default=None if not required else fields.missing_,
                         validate=validate.Length(max=4000), metadata=dict(NOTES))


class FormSchema(Schema):
    class Meta:
        unknown = RAISE

    # Answering a return: what was changed, shown to the reviewer of the next round (UIs offer it on rework).
    reply = fields.String(load_default=None, validate=validate.Length(max=4000),
                          metadata={"title": "对退回意见的答复", "title_en": "Reply to the return comment"})


class DecisionForm(FormSchema):
    class Meta(FormSchema.Meta):
        exclude = ("reply",)


class NotesForm(FormSchema):
    notes = _notes()


class IntakeForm(FormSchema):
    summary = fields.String(load_default=None, validate=validate.Length(max=4000),
                            metadata={"title": "需求概述", "title_en": "Summary"})


class DifficultyForm(FormSchema):
    difficulty = fields.Decimal(required=True, as_string=True, places=2,
                                validate=validate.Range(min=0.1, max=5),
                                metadata={"title": "难度系数", "title_en": "Difficulty coefficient"})
    complexity_note = fields.String(required=True, validate=validate.Length(min=2, max=4000),
                                    metadata={"title": "复杂度说明意见", "title_en": "Complexity assessment"})


class SurveyForm(FormSchema):
    item_count = fields.Integer(load_default=None, validate=validate.Range(min=1, max=100000),
                                metadata={"title": "梳理事项数", "title_en": "Items sorted"})
    notes = _notes()


class ReviewForm(DecisionForm):
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "return"]),
                             metadata={"title": "审核结论", "title_en": "Decision",
                                       "labels": {"approve": "确认通过", "return": "退回修改"}})
    comment = fields.String(load_default=None, validate=validate.Length(max=4000),
                            metadata={"title": "审核意见", "title_en": "Comment"})

    @validates_schema
    def _comment_when_returning(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("decision") == "return" and not (data.get("comment") or "").strip():
            raise ValidationError("退回时必须填写审核意见 (a comment is required when returning)", "comment")


class BuildForm(FormSchema):
    integration_done = fields.Boolean(required=True, validate=validate.Equal(True),
                                      metadata={"title": "前后端开发与联调已完成",
                                                "title_en": "Build and integration done"})
    notes = _notes()


class TestsForm(FormSchema):
    tests_passed = fields.Boolean(required=True, validate=validate.Equal(True),
                                  metadata={"title": "测试已通过", "title_en": "Tests passed"})
    notes = _notes()


class GoLiveForm(FormSchema):
    go_live_date = fields.Date(required=True, metadata={"title": "上线日期", "title_en": "Go-live date"})
    url = fields.Url(load_default=None, require_tld=False,
                     metadata={"title": "上线地址", "title_en": "Live URL"})
    notes = _notes()


class CosignForm(DecisionForm):
    """Co-signing the go-live confirmation: confirm it, or refuse it (return, with the reason)."""

    decision = fields.String(load_default="approve", validate=validate.OneOf(["approve", "return"]),
                             metadata={"title": "会签结论", "title_en": "Decision",
                                       "labels": {"approve": "确认会签", "return": "拒绝会签并退回"}})
    confirm = fields.Boolean(load_default=False,
                             metadata={"title": "确认联调与上线", "title_en": "I confirm integration and go-live"})
    comment = fields.String(load_default=None, validate=validate.Length(max=4000),
                            metadata={"title": "意见", "title_en": "Comment"})

    @validates_schema
    def _confirmed_or_reasoned(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("decision") == "return":
            if not (data.get("comment") or "").strip():
                raise ValidationError("退回时必须填写审核意见 (a comment is required when returning)", "comment")
        elif data.get("confirm") is not True:
            raise ValidationError("Must be equal to True.", "confirm")


class LicenceIntakeForm(FormSchema):
    parts = fields.List(fields.String(validate=validate.OneOf(["showing", "using"])), load_default=list,
                        metadata={"title": "接入内容（亮证/用证）", "title_en": "Optional parts",
                                  "labels": {"showing": "亮证", "using": "用证"}})
    summary = fields.String(load_default=None, validate=validate.Length(max=4000),
                            metadata={"title": "需求概述", "title_en": "Summary"})


class GuideListForm(FormSchema):
    item_count = fields.Integer(required=True, validate=validate.Range(min=1, max=100000),
                                metadata={"title": "需导办事项数", "title_en": "Items needing guidance"})
    notes = _notes()


class GuideDesignForm(FormSchema):
    question_count = fields.Integer(required=True, validate=validate.Range(min=1, max=10000),
                                    metadata={"title": "问题数", "title_en": "Questions"})
    notes = _notes()


class DifficultyReviewForm(FormSchema):
    """The third party's confirmation of the PM's proposed difficulty coefficient, or another one with a reason."""

    # Not `decision`: the model's review gateways read that variable, and this answer stays in the process data.
    verdict = fields.String(required=True, validate=validate.OneOf(["confirm", "set"]),
                             metadata={"title": "确认结论", "title_en": "Decision",
                                       "labels": {"confirm": "确认所提难度系数", "set": "改定难度系数"}})
    difficulty = fields.Decimal(load_default=None, as_string=True, places=2,
                                validate=validate.Range(min=0.1, max=5),
                                metadata={"title": "改定的难度系数", "title_en": "Difficulty set instead"})
    reason = fields.String(load_default=None, validate=validate.Length(max=4000),
                           metadata={"title": "理由", "title_en": "Reason"})

    @validates_schema
    def _reason_when_setting(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("verdict") == "set":
            if data.get("difficulty") is None:
                raise ValidationError("改定时必须给出难度系数 (give the coefficient you set)", "difficulty")
            if len((data.get("reason") or "").strip()) < 2:
                raise ValidationError("改定时必须说明理由 (a reason is required)", "reason")


class MeteredRecordForm(FormSchema):
    """The record's figures as the evidence states them (the units themselves were registered with the item)."""

    source = fields.String(load_default=None, validate=validate.Length(max=400),
                           metadata={"title": "数据来源（统计系统/账单）", "title_en": "Source of the figures"})
    notes = _notes()


class DeliverableForm(FormSchema):
    delivered_on = fields.Date(required=True, metadata={"title": "交付/举办日期", "title_en": "Delivered on"})
    participants = fields.Integer(load_default=None, validate=validate.Range(min=0, max=1_000_000),
                                  metadata={"title": "参加人数（培训）", "title_en": "Participants (trainings)"})
    notes = _notes()


class MonthlyReportForm(FormSchema):
    """Submitting the month's operations report: its narrative (written here, or earlier on the report)."""

    narrative = fields.String(load_default=None, validate=validate.Length(max=20000),
                              metadata={"title": "运营情况说明", "title_en": "Narrative"})


FORMS: dict[str, type[FormSchema]] = {
    "monthly_report": MonthlyReportForm,
    "report_review": ReviewForm,
    "difficulty_review": DifficultyReviewForm,
    "metered_record": MeteredRecordForm,
    "deliverable": DeliverableForm,
    "intake": IntakeForm,
    "difficulty_confirmation": DifficultyForm,
    "survey_sorting": SurveyForm,
    "review": ReviewForm,
    "design": NotesForm,
    "build_integration": BuildForm,
    "tests": TestsForm,
    "walkthrough": NotesForm,
    "go_live": GoLiveForm,
    "cosign": CosignForm,
    "analysis": NotesForm,
    "plan": NotesForm,
    "licence_step": NotesForm,
    "guide_design": GuideDesignForm,
    "entry": NotesForm,
    "publish": NotesForm,
    "intake_licence": LicenceIntakeForm,
    "guide_list": GuideListForm,
    "quality_check": TestsForm,
}


class UnknownForm(KeyError):
    pass


def schema_for(form_key: str) -> FormSchema:
    try:
        return FORMS[form_key]()
    except KeyError as exc:
        raise UnknownForm(form_key) from exc


def load_form(form_key: str, data: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate submitted data. Returns (clean data as JSON-safe values, errors by field)."""
    if not isinstance(data, dict):
        return {}, {"_schema": ["data must be an object"]}
    schema = schema_for(form_key)
    try:
        clean = schema.load(data)
    except ValidationError as err:
        messages = err.normalized_messages()
        return {}, {k: (v if isinstance(v, list) else [str(v)]) for k, v in messages.items()}
    # Task data is serialised by SpiffWorkflow as JSON: keep only JSON-native values.
    return schema.dump(clean), {}


class _Converter(FieldConverterMixin):
    def __init__(self) -> None:
        # JSON Schema draft 2020-12 is what OpenAPI 3.1 uses, so convert as 3.1.
        self.openapi_version = Version("3.1.0")
        self.init_attribute_functions()


_CONVERTER = _Converter()


def json_schema(form_key: str) -> dict[str, Any]:
    """A JSON Schema of the form's fields (titles in Chinese, English under x-title-en)."""
    schema = schema_for(form_key)
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, field in schema.fields.items():
        prop = _CONVERTER.field2property(field)
        meta = field.metadata
        prop.pop("title_en", None)
        prop.pop("labels", None)
        if "title" in meta:
            prop["title"] = meta["title"]
        if "title_en" in meta:
            prop["x-title-en"] = meta["title_en"]
        if "labels" in meta:
            prop["x-labels"] = meta["labels"]
        props[name] = prop
        if field.required:
            required.append(name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}
