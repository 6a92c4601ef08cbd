"""Web translations: Chinese is the source language; a dict gives English. Flask-Babel picks the locale."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Flask, request, session
from flask_babel import format_date, format_datetime, get_locale

from engine.catalog import ARTEFACT_KINDS
from engine.policy import ROLE_DEFS, ROLE_LABELS
from engine.workkinds import stage_labels, step_help

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

# Stage names and step help come from the BPMN models (engine/workkinds.py); English is below.
STAGES = stage_labels()
ROLES = {**ROLE_LABELS, "system": "系统"}
STATUSES = {"active": "进行中", "completed": "已完成", "cancelled": "已取消", "ready": "待办"}
MODES = {"new": "新增接入", "iteration": "优化迭代", "record": "计量记录", "deliverable": "交付成果"}
CHANNELS = {"pc": "PC端", "mobile": "移动端", "kiosk": "自助终端"}
EVENTS = {
    "item.created": "登记事项", "item.completed": "事项完成", "item.difficulty_set": "确定难度系数",
    "task.claimed": "认领任务", "task.unclaimed": "放回任务", "task.handed_over": "转交任务",
    "task.completed": "完成任务", "artefact.uploaded": "上传交付物", "artefact.downloaded": "下载交付物",
    "timer.fired": "定时触发", "workload.tallied": "计入工作量",
}
DECISIONS = {"approve": "确认通过", "return": "退回修改"}
STEP_HELP = step_help()

EN: dict[str, str] = {
    # settlement by the contract (issue 17): stages, clocks, payments, grades
    "中标金额（元）": "Award (CNY)", "从前期结转": "Carry from an earlier stage", "付款日期": "Paid on",
    "发票号": "Invoice number", "合同时限": "Contract deadlines",
    "合同未约定支付计划。": "The contract sets no payment plan.",
    "合同生效后": "On signing", "审定累计金额（元）": "Approved cumulative (CNY)", "审定金额（元）": "Approved (CNY)",
    "已付（元）": "Paid (CNY)", "已登记付款": "Payment recorded", "已超时": "Overdue", "应付（元）": "Due (CNY)",
    "截止": "Due", "支付条件": "Condition", "支付计划": "Payment schedule", "时限": "Deadlines",
    "月报逾期扣款（元）": "Late monthly report deduction (CNY)", "期间": "Period", "未付（元）": "Outstanding (CNY)",
    "未到期": "Running", "没有进行中的合同时限。": "No contract deadline is running.", "登记付款": "Record payment",
    "笔次": "No.", "累计上限（元）": "Cumulative cap (CNY)", "累计审定金额（元）": "Settled total (CNY)",
    "结算阶段": "Settlement stage", "结转": "Carried", "请填写有效的金额和付款日期。": "Enter a valid amount and date.",
    "超上限暂不支付（元）": "Held back by the cap (CNY)", "超过中标金额 10%": "Beyond award + 10 %",
    "阶段审定后": "after the stage is approved", "（按期间）": "(by period)",
    "结算材料提交": "Settlement materials", "修改完善": "Revision", "按时完成": "Done on time", "逾期完成": "Done late",
    "待结算审定": "Waiting for approval", "应付": "Due", "已付清": "Paid", "无需支付": "Nothing due",
    "结算修改完善": "Settlement revision", "月度运营报告": "Monthly operations report", "整改": "Rectification",
    "优秀": "Excellent", "良好": "Good", "一般": "Fair", "合格": "Pass", "不合格": "Fail",
    # layout and navigation
    "ItemGate 事项接入管理": "ItemGate service onboarding",
    "跳到主要内容": "Skip to main content",
    "主导航": "Main navigation",
    "收件箱": "Inbox", "事项": "Items", "看板": "Dashboard", "退出登录": "Sign out", "登录": "Sign in",
    "语言": "Language", "中文": "中文", "English": "English",
    "当前用户": "Signed in as",
    ("证据存储桶未启用对象锁定（ITEMGATE_EVIDENCE_LOCK=off）："
     "已通过关卡的证据可以被删除。请迁移到启用对象锁定的存储桶（见 docs/TRUST.md）。"):
        "The evidence bucket has no object lock (ITEMGATE_EVIDENCE_LOCK=off): evidence that passed a gate can be "
        "deleted. Move to a bucket created with object lock (see docs/TRUST.md).",
    # login
    "用户名": "Username", "密码": "Password", "用户名或密码错误": "Wrong username or password",
    "请输入用户名和密码": "Enter your username and password",
    "您已退出登录": "You have signed out",
    "登录已过期，请重新登录": "Your session has expired; please sign in again",
    # inbox
    "我的任务": "My tasks", "组任务": "Group tasks", "全部任务": "All tasks",
    "任务": "Task", "部门": "Department", "环节": "Stage", "阶段": "Stage", "截止时间": "Due",
    "处理人": "Assignee", "操作": "Actions", "认领": "Claim", "放回": "Release", "转交": "Hand over",
    "转交给": "Hand over to", "确定转交": "Confirm hand-over", "已逾期": "Overdue", "退回": "Returned",
    "筛选": "Filter", "搜索事项": "Search items", "事项编码或名称": "Item code or name",
    "全部环节": "All stages", "全部部门": "All departments", "排序": "Sort", "按截止时间": "By due date",
    "按创建时间": "By creation time", "按事项编码": "By item code", "只看逾期": "Overdue only",
    "应用": "Apply", "清除": "Clear", "没有任务。": "No tasks.", "上一页": "Previous", "下一页": "Next",
    "第 {page} / {pages} 页，共 {total} 条": "Page {page} of {pages}, {total} in all",
    "分页": "Pagination", "任务列表": "Task list", "未认领": "Unclaimed",
    "没有可转交的同事": "No colleague to hand over to",
    "已认领任务": "Task claimed", "已放回任务": "Task released", "已转交给 {name}": "Handed over to {name}",
    "任务已提交": "Task completed", "创建时间": "Created",
    # task page
    "事项信息": "Item", "本环节要求": "What this step asks", "服务类别": "Service line", "接入方式": "Mode",
    "渠道": "Channels", "难度系数": "Difficulty", "状态": "Status", "查看事项": "View item",
    "退回意见": "Comment on return", "交付物检查": "Gate checklist", "已上传": "Uploaded", "缺少": "Missing",
    "拖放文件到此处，或": "Drop a file here, or", "选择文件": "choose a file", "上传": "Upload",
    "上传中…": "Uploading…", "上传成功": "Uploaded", "上传失败": "Upload failed",
    "不支持此文件类型": "This file type is not accepted", "文件超过 {mb} MB 上限": "The file exceeds the {mb} MB limit",
    "允许的类型": "Accepted types", "最大": "Max", "版本": "version", "待审交付物": "Artefacts to review",
    "下载": "Download", "预览": "Preview", "提交": "Submit", "完成任务": "Complete task",
    "以下交付物尚未上传，暂不能提交：": "These artefacts are missing, so the task cannot be completed yet:",
    "表单有错误，请修改后再提交。": "The form has errors; correct them and submit again.",
    "此任务已由他人认领。": "This task is held by someone else.",
    "该分录所在的结算申报正在审核中，不能冲销；请待申报退回后先将其移出申报。":
        "The settlement claim holding this entry is under review, so it cannot be reversed; once the claim is "
        "returned, remove the entry from it first.",
    "该分录已被冲销。": "This entry has already been reversed.",
    "存储中的文件无法读取，请联系系统管理员。": "The stored file cannot be read; contact the system administrator.",
    "提交的内容不能包含空字符（NUL）或无效的 Unicode 字符，请删除后重试。":
        "What you sent contains a NUL character or invalid Unicode; remove it and try again.",
    "此任务已结束，无需处理。": "This task is closed; nothing to do.",
    "您不能处理此任务。": "You cannot act on this task.",
    "必填": "required", "是": "Yes", "否": "No", "请选择": "Choose", "任务处理": "Task handling",
    "暂无交付物。": "No artefacts yet.", "本环节无需上传交付物。": "This step needs no artefacts.",
    "认领后可处理": "Claim to work on it", "由 {name} 处理中": "Held by {name}",
    "操作失败：{detail}": "Action failed: {detail}",
    # form validation messages (marshmallow)
    "此项必填。": "This field is required.", "请勾选确认。": "Please tick to confirm.",
    "请输入有效的整数。": "Enter a whole number.", "请输入有效的数字。": "Enter a number.",
    "请输入有效的日期。": "Enter a valid date.", "请输入有效的网址。": "Enter a valid URL.",
    "数值超出允许范围。": "The value is out of range.", "内容长度不符合要求。": "The length is not allowed.",
    "退回时必须填写审核意见。": "A comment is required when returning.", "选项无效。": "Invalid choice.",
    # item page
    "事项详情": "Item detail", "流程图": "Process diagram", "当前环节": "Current step", "已完成环节": "Completed step",
    "时间线": "Timeline", "时间": "Time", "人员": "Who", "事件": "What", "意见": "Comment",
    "交付物": "Artefacts", "类型": "Kind", "文件": "File", "大小": "Size", "校验和 (SHA-256)": "Checksum (SHA-256)",
    "上传人": "Uploaded by", "上传时间": "Uploaded at", "待办任务": "Open tasks",
    "无法绘制流程图。": "The diagram cannot be drawn.",
    "流程图图例": "Diagram legend", "放大查看": "Zoom in", "缩小查看全图": "Show the whole diagram",
    "编码": "Code", "名称": "Name", "全部状态": "All statuses",
    "全部服务类别": "All service lines", "事项列表": "Work items", "没有事项。": "No items.",
    # dashboard
    "可选": "Optional", "合同目标进度": "Progress toward contract targets", "目标": "Target",
    "是否按期": "On track", "按期": "On track", "落后": "Behind", "按期应完成": "Expected by now",
    "合同未设定目标。": "No contract sets targets.",
    "项目看板": "Project dashboard", "进行中事项": "Active items", "本月完成": "Completed this month",
    "逾期任务": "Overdue tasks", "按服务类别": "By service line", "按环节": "By stage", "按部门": "By department",
    "进行中": "Active", "已完成": "Completed", "合计": "Total", "每周完成数": "Completions per week",
    "近 {n} 周每周完成的事项数": "Items completed per week over the last {n} weeks",
    "周": "Week", "没有逾期任务。": "No overdue tasks.", "查看全部": "View all", "数量": "Count",
    "逾期": "Overdue",
    # errors
    "出错了": "Something went wrong", "返回收件箱": "Back to inbox",
    "表单已过期或缺少安全令牌，请返回并刷新页面后重试。":
        "The form has expired or lacks its security token; go back, reload the page and try again.",
    "请求无效。": "The request is not valid.", "您没有权限执行此操作。": "You are not allowed to do this.",
    "页面不存在，或您无权访问。": "The page does not exist, or you may not see it.",
    "不支持此操作。": "This action is not supported.", "数据已被他人更改，请刷新后重试。":
        "Someone else changed this; reload and try again.", "文件太大。": "The file is too large.",
    "不支持此文件类型。": "This file type is not accepted.", "提交的内容有误。": "What you sent is not valid.",
    "服务暂时不可用，请稍后再试。": "The service is unavailable; try again later.",
    "出现了错误。": "An error occurred.",
    "事项已结束，不能再修改。": "The item is closed and can no longer change.",
    "您提交了此交付物，不能由您本人审核。": "You submitted this deliverable, so you cannot review it.",
    "找不到该用户。": "No such user.", "未知的交付物类型。": "Unknown artefact kind.",
    "该交付物已提交审核，审核结束前不能替换。":
        "This artefact has been submitted for review; it cannot be replaced until the review is decided.",
    "多个部门的任务都需要此交付物，请在对应任务页面上传。":
        "Tasks of several departments need this artefact; upload it from the task it is for.",
    "所指的任务无效。": "The task given is not valid.",
    "所指的任务已结束，不能再上传交付物。": "The task given is closed; it takes no more artefacts.",
    "此任务不需要该类交付物。": "This task does not take that kind of artefact.",
    "这是其他部门的交付物，您不能上传。": "This is another department's evidence; you cannot upload it.",
}
for _table, _en in (
    (STAGES, {"intake": "Intake", "survey": "Survey", "analysis": "Analysis", "plan": "Plan", "design": "Design",
              "build": "Build", "test": "Test", "walkthrough": "Walkthrough", "go_live": "Go-live",
              "confirmation": "Confirmation", "issuing": "Issuing", "showing": "Showing", "using": "Using",
              "guide": "Scenario guide", "done": "Done"}),
    (ROLES, {**{r.name: r.label_en for r in ROLE_DEFS}, "system": "System"}),
    (STATUSES, {"active": "Active", "completed": "Completed", "cancelled": "Cancelled", "ready": "Open"}),
    (MODES, {"new": "New", "iteration": "Iteration", "record": "Metered record", "deliverable": "Deliverable"}),
    (CHANNELS, {"pc": "PC", "mobile": "Mobile", "kiosk": "Kiosk"}),
    (EVENTS, {"item.created": "Item registered", "item.completed": "Item completed",
              "item.difficulty_set": "Difficulty set", "task.claimed": "Task claimed",
              "task.unclaimed": "Task released", "task.handed_over": "Task handed over",
              "task.completed": "Task completed", "artefact.uploaded": "Artefact uploaded",
              "artefact.downloaded": "Artefact downloaded", "timer.fired": "Timer fired",
              "workload.tallied": "Workload tallied"}),
    (DECISIONS, {"approve": "Approved", "return": "Returned for changes"}),
    (STEP_HELP, {
        "intake": "Upload the requirement letter (new) or change letter (iteration) and the complexity "
                  "statement; summarise the request.",
        "intake_licence": "Submit the e-licence request and choose whether showing and using are included.",
        "difficulty_confirmation": "Set the item's difficulty coefficient from the complexity statement and "
                                   "say why.",
        "survey_sorting": "Do the survey, upload the survey form and sorting list, and give the item count.",
        "review": "Review the artefacts, then approve or return them; a comment is required when returning.",
        "design": "Analyse the requirements and upload the functional design document.",
        "build_integration": "Tick once front-end, back-end and integration are done.",
        "tests": "Upload the functional/performance and security test reports and confirm the tests passed.",
        "walkthrough": "Do the UX walkthrough and upload its confirmation.",
        "go_live": "Release, upload the go-live record or screenshot and give the go-live date.",
        "cosign": "Check the integration and go-live confirmation and co-sign it.",
    }),
):
    for _key, _zh in _table.items():
        if _key in _en:
            EN.setdefault(_zh, _en[_key])
EN.update({
    "需求函": "Requirement letter", "变更函": "Change letter", "复杂度说明": "Complexity statement",
    "调研表": "Survey form", "事项梳理清单": "Sorting list", "功能设计文档": "Functional design",
    "业务方案": "Business plan", "技术实施方案": "Technical plan", "功能和性能测试报告": "Test report",
    "第三方测试报告": "Third-party test report", "安全测试报告": "Security test report",
    "业务数据质量检测确认单": "Data quality confirmation", "走查确认单": "Walkthrough confirmation",
    "上线记录或截图": "Go-live record", "联调与上线确认单": "Integration and go-live confirmation",
    "上线确认单": "Go-live confirmation", "模板校核确认": "Template check confirmation",
    "证照参数表": "Licence parameters", "电子证照库记录": "Licence records", "证照接口说明": "Licence interface spec",
    "电子证照接入清单": "E-licence list", "制证测试报告": "Issuing test report", "亮证测试报告": "Showing test report",
    "用证测试报告": "Using test report", "制证上线记录": "Issuing go-live record",
    "亮证上线记录": "Showing go-live record", "用证上线记录": "Using go-live record",
    "关联事项需求分析": "Linked item analysis", "办理现状调研分析": "Current-state survey",
    "导办事项清单": "Guide item list", "场景导办设计稿": "Scenario guide design", "审核要点及样例": "Review points",
    "配置方案": "Configuration plan",
})

# Sign-off sheets on the task page (docs/SHEETS.md).
EN.update({
    "打印确认单": "Print sign-off sheet", "核验码": "Verification code",
    "上传签字盖章的扫描件时，请填写确认单上印的核验码。":
        "When uploading the signed and stamped scan, enter the verification code printed on the sheet.",
})

# Ledger, settlement and export pages (api/web/settlements.py).
EN.update({
    "佐证材料包": "Evidence bundle", "保存": "Save", "修改明细": "Change lines", "元": "CNY",
    "全部合同": "All contracts",
    "冲销": "Reverse", "冲销分录": "Reversal of", "冲销原因": "Reason for the reversal", "分录号": "Entry no.",
    "分录数": "Entries", "初审": "First review", "原因": "Reason", "合同": "Contract", "增加分录": "Add entries",
    "备注": "Note", "完成率": "Progress", "完成进度": "Progress against targets", "审定": "Final approval",
    "审核": "Review", "审核记录": "Review trail", "审核通过": "Accept", "导出": "Exports",
    "工作量台账": "Workload ledger", "工作量统计明细表": "Workload detail sheet",
    "已保存审核意见": "Review saved", "已修改申报明细": "Claim lines changed", "已冲销该分录": "Entry reversed",
    "已审定（锁定）：结算结果不可再修改。": "Approved (locked): this settlement can no longer change.",
    "已开启结算": "Settlement opened", "已提交结算申报": "Claim submitted", "已记录审核结论": "Decision recorded",
    "应付金额（元）": "Net payable (CNY)", "开启结算": "Open a settlement", "开始日期": "From", "结束日期": "To",
    "提交截止": "Submission deadline", "提交结算申报": "Submit the claim",
    "文件在服务器上逐段生成并边生成边下载；大文件请耐心等待浏览器的下载进度。":
        "Files are generated and downloaded piece by piece; for large files follow your browser's download progress.",
    "没有分录。": "No entries.", "渠道/指标": "Channel / target", "申报明细": "Claim lines",
    "申报金额（元）": "Claimed (CNY)", "移除分录": "Remove entries", "结算": "Settlements", "结算期名称": "Period name",
    "结算申报表": "Claim sheet", "结算金额": "Amounts", "考核得分": "Assessment score",
    "考核扣款（元）": "Assessment deduction (CNY)", "计量时间": "Tallied at",
    "请填写有效的结算期间。": "Give a valid settlement period.", "轮次": "Round", "还没有结算。": "No settlements yet.",
    "逐条意见": "Line comment", "逾期提交": "Submitted late", "逾期提交扣款（元）": "Late penalty (CNY)",
    "金额（元）": "Amount (CNY)", "预估量/目标": "Estimate / target", "目标事项数": "Target items",
    "编制中": "Draft", "修改中": "Revising", "第三方审核": "Third-party review", "采购单位初审": "Buyer first review",
    "采购单位审定": "Buyer final approval", "已审定（锁定）": "Approved (locked)",
    "结算已审定（锁定），不能再修改；本次操作已记录。":
        "The settlement is approved (locked) and can no longer change; this attempt has been recorded.",
})

# background export jobs (api/web/settlements.py, export_job.html)
EN.update({
    "后台生成": "Generate in background",
    "已开始后台生成": "Background export started",
    "后台导出": "Background export",
    "排队中": "Queued",
    "生成中": "Running",
    "失败": "Failed",
    "进度": "Progress",
    "筛选条件": "Filter",
    "提交时间": "Requested at",
    "完成时间": "Finished at",
    "下载结果": "Download the result",
    "生成失败": "Generation failed",
    "页面每 2 秒自动刷新。": "This page refreshes every 2 seconds.",
    "立即刷新": "Refresh now",
    "大文件可选择“后台生成”：服务器生成完毕后在任务页面显示进度和下载链接。":
        "For large files choose “Generate in background”: the job page shows the progress and, when the file is"
        " ready, a download link.",
})

# Task names as the process models give them (the diagram keeps the model's own text).
TASK_TITLES_EN = {
    "提交需求函与复杂度说明": "Submit requirement letter and complexity statement",
    "确认难度系数": "Confirm difficulty coefficient", "调研与要素梳理": "Survey and sorting",
    "部门确认调研梳理结果": "Department confirms survey results",
    "需求分析与功能设计": "Analysis and functional design",
    "部门确认功能设计": "Department confirms design", "前后端开发与联调": "Build and integration",
    "功能、性能与安全测试": "Functional, performance and security tests",
    "功能与安全测试": "Functional and security tests",
    "安全测试": "Security test", "体验走查": "UX walkthrough", "纳管发布上线": "Deploy and release",
    "需求单位会签联调与上线确认单": "Department co-signs go-live confirmation",
    "实施方会签联调与上线确认单": "Implementer co-signs go-live confirmation", "办件质量校验": "Case quality check",
    "办理现状调研分析": "Current-state survey", "关联事项需求分析": "Linked item analysis",
    "部门确认关联事项分析": "Department confirms linked item analysis",
    "编制业务方案与技术实施方案": "Business and technical plans", "牵头部门确认方案": "Lead department confirms plans",
    "证照信息采集": "Collect licence information", "部门确认证照信息": "Department confirms licence information",
    "证照底版定制": "Customise licence template", "参数列表配置": "Configure parameter list",
    "模板校核确认": "Template check confirmation", "制证联调与测试": "Issuing integration and test",
    "制证发布上线": "Issuing release", "亮证设计": "Showing design", "亮证联调与测试": "Showing integration and test",
    "亮证发布上线": "Showing release", "用证设计": "Using design", "用证联调与测试": "Using integration and test",
    "用证发布上线": "Using release", "梳理需导办事项清单": "List items needing guidance",
    "部门确认导办事项清单": "Department confirms guidance list",
    "设计问题、答案与情形关联（设计初稿）": "Design questions, answers and scenarios (draft)",
    "部门审核导办设计": "Department reviews guide design", "录入系统": "Enter into the system",
    "导办测试": "Guide test", "导办发布上线": "Guide release",
}
EN.update(TASK_TITLES_EN)

# marshmallow's English messages → Chinese (shown inline under the field).
_MESSAGES = {
    "Missing data for required field.": "此项必填。",
    "Must be equal to True.": "请勾选确认。",
    "Not a valid integer.": "请输入有效的整数。",
    "Not a valid number.": "请输入有效的数字。",
    "Not a valid date.": "请输入有效的日期。",
    "Not a valid URL.": "请输入有效的网址。",
    "Must be one of: approve, return.": "选项无效。",
    "Field may not be null.": "此项必填。",
}


def select_locale() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else DEFAULT


def lang() -> str:
    locale = get_locale()
    return "en" if locale is not None and locale.language == "en" else "zh"


def _(text: str, **values: Any) -> str:
    out = EN.get(text, text) if lang() == "en" else text
    return out.format(**values) if values else out


def form_message(message: str) -> str:
    """A field error in the page's language: known marshmallow texts get a Chinese source first."""
    if message.startswith("Must be greater than") or message.startswith("Must be less than"):
        message = "数值超出允许范围。"
    elif message.startswith("Length must be") or message.startswith("Shorter than") \
            or message.startswith("Longer than"):
        message = "内容长度不符合要求。"
    elif message.startswith("退回时必须填写审核意见"):
        message = "退回时必须填写审核意见。"
    return _(_MESSAGES.get(message, message))


def label(table: dict[str, str], key: str | None) -> str:
    if key is None:
        return ""
    return _(table.get(key, key))


def kind_title(kind: str) -> str:
    if kind in ARTEFACT_KINDS:
        return _(ARTEFACT_KINDS[kind])
    # A kind a contract's catalogue declares ([artefact_kinds]): its own title, read once per request.
    from flask import g

    declared = g.get("declared_kinds")
    if declared is None:
        from sqlalchemy import select

        from api.extensions import db
        from storage.models import Contract

        declared = {}
        for settings in db.session.scalars(select(Contract.settings)):
            declared.update((settings or {}).get("artefact_kinds") or {})
        g.declared_kinds = declared
    spec = declared.get(kind)
    if spec is None:
        return kind
    return str(spec.get("title_en") or spec["title"]) if lang() == "en" else str(spec["title"])


def fmt_datetime(value: datetime | str | None) -> str:
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return format_datetime(value, "yyyy-MM-dd HH:mm")


def fmt_date(value: date | datetime | None) -> str:
    if not value:
        return ""
    if isinstance(value, datetime):
        return format_datetime(value, "yyyy-MM-dd")
    return format_date(value, "yyyy-MM-dd")


def filesize(size: int | None) -> str:
    size = int(size or 0)
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def url_with(**changes: Any) -> str:
    """The current page's URL with some query arguments changed (None removes one)."""
    args = {k: v for k, v in request.args.items()}
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = str(value)
    query = urlencode(args)
    return request.path + (f"?{query}" if query else "")


def install(app: Flask) -> None:
    env = app.jinja_env
    env.globals.update(
        _=_, lang=lang, url_with=url_with, kind_title=kind_title,
        stage_label=lambda k: label(STAGES, k), role_label=lambda k: label(ROLES, k),
        status_label=lambda k: label(STATUSES, k), mode_label=lambda k: label(MODES, k),
        channel_label=lambda k: label(CHANNELS, k), event_label=lambda k: label(EVENTS, k),
        decision_label=lambda k: label(DECISIONS, k),
        step_help=lambda form: _(STEP_HELP[form]) if form in STEP_HELP else "",
    )
    env.filters.update(dt=fmt_datetime, d=fmt_date, filesize=filesize)
