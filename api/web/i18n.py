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
    "item.created": "事项登记", "item.completed": "事项完成", "item.difficulty_set": "确定难度系数",
    "task.claimed": "认领任务", "task.unclaimed": "放回任务", "task.handed_over": "转交任务",
    "task.completed": "完成任务", "artefact.uploaded": "上传交付物", "artefact.downloaded": "下载交付物",
    "timer.fired": "定时触发", "workload.tallied": "计入工作量",
    "item.cancelled": "事项已取消", "item.reworked": "已退回重做", "item.difficulty_proposed": "建议难度系数已调整",
    "task.reopened": "重新打开任务", "service_order.accepted": "受理运营服务单",
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
              "workload.tallied": "Workload tallied", "item.cancelled": "Item cancelled",
              "item.reworked": "Sent back for rework", "item.difficulty_proposed": "Proposed difficulty changed",
              "task.reopened": "Task reopened", "service_order.accepted": "Service order accepted"}),
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
    "扫描件上的二维码无法识别时，请填写确认单上印的核验码。":
        "If the QR code on the scan cannot be read, enter the verification code printed on the sheet.",
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

# The admin console and notifications (api/web/admin.py, api/web/notifications.py).
EN.update({
    "系统管理": "Administration", "新建部门": "New department", "部门代码": "Department code",
    "中文名称": "Chinese name", "创建": "Create", "牵头审核人": "Lead reviewer",
    "群机器人（通知）": "Group robot (notifications)",
    "群机器人 Webhook": "Group robot webhook", "移除机器人": "Remove the robot",
    "企业微信/钉钉 Webhook 地址": "WeCom/DingTalk webhook URL", "工作日历": "Working-day calendar",
    "覆盖的年份": "Years covered", "年份": "Year", "来源": "Source", "录入时间": "Entered at",
    "未覆盖：按周一至周五计算": "Not covered: Monday to Friday are counted", "查看/录入": "View / enter",
    "{year} 年": "{year}",
    "{year} 年的节假日尚未录入，期限按周一至周五计算。请录入法定节假日和调休上班日。":
        "The holidays of {year} are not entered yet; deadlines count Monday to Friday. Enter the public holidays and "
        "make-up workdays.",
    "日历包已覆盖此年份；在此录入将以管理员录入为准。":
        "The calendar package covers this year; an entry here takes precedence.",
    "切换": "Go", "法定节假日（每行一天：YYYY-MM-DD 备注）": "Public holidays (one a line: YYYY-MM-DD note)",
    "调休上班日（周六或周日，每行一天）": "Make-up workdays (a Saturday or Sunday, one a line)",
    "保存 {year} 年日历": "Save the {year} calendar", "系统状态": "System status", "就绪状态": "Readiness",
    "就绪": "Ready", "未就绪": "Not ready", "正常": "OK", "证据锁定": "Evidence lock",
    "对象锁定已启用": "Object lock is on", "存储桶未启用对象锁定": "The bucket has no object lock",
    "暂时无法确认": "Cannot tell right now", "审计链": "Audit chain", "最近校验": "Last verification",
    "通过": "Passed", "未通过": "Failed", "{n} 条事件": "{n} events", "从未校验": "Never verified",
    "最近锚定": "Last anchor", "最近 7 天没有锚定": "No anchor in the last 7 days",
    "证据完整性检查 (fsck)": "Evidence check (fsck)", "无问题": "Clean", "发现问题": "Problems found",
    "检查 {c} 个，问题 {p} 个，孤立对象 {o} 个": "{c} checked, {p} problems, {o} orphans",
    "从未运行": "Never run", "后台任务": "Background work", "到期未触发的定时器": "Due timers not yet fired",
    "导出任务": "Export jobs", "无": "none", "通知发送": "Notification delivery", "待发送": "pending",
    "已发送": "sent", "邮件服务器": "Mail server", "已配置": "configured",
    "未配置（ITEMGATE_SMTP_HOST），不发送邮件": "not configured (ITEMGATE_SMTP_HOST): no e-mail is sent",
    "未覆盖": "not covered", "录入": "Enter", "发送失败的通知": "Failed notification deliveries",
    "方式": "Channel", "目标": "Target", "标题": "Title", "尝试次数": "Attempts", "最后错误": "Last error",
    "重试": "Retry", "没有发送失败的通知。": "No failed deliveries.", "合同与服务目录": "Contracts and catalogues",
    "检查结果": "Check result", "发现 {n} 个错误，未载入任何内容。": "{n} problem(s) found; nothing was loaded.",
    "第 {n} 行": "Line {n}", "新合同": "New contract", "与已载入的版本完全相同": "Identical to the loaded version",
    "与已载入版本的差异如下": "Differences from the loaded version", "合同信息": "Contract",
    "字段": "Field", "原值": "Old", "新值": "New", "服务条目": "Service lines", "编号": "Code",
    "变化": "Change", "明细": "Details",
    "文件中未列出的已有条目保留不变（已有事项和台账引用它们）：":
        "Loaded lines the file does not list stay as they are (items and the ledger refer to them): ",
    "确认载入": "Load it", "已载入的合同": "Loaded contracts", "合同编号": "Contract code",
    "载入时间": "Loaded at", "还没有合同。": "No contracts yet.", "上传服务目录文件": "Upload a catalogue file",
    ("上传 TOML 格式的合同服务目录（格式见 docs/CATALOG.md）。"
     "先检查：列出每个错误及其行号，或与已载入版本的差异；确认后再载入。"):
        "Upload a contract catalogue in TOML (format: docs/CATALOG.md). It is checked first: every problem with its "
        "line, or the differences from the loaded version; then you load it.",
    "目录文件": "Catalogue file", "检查": "Check", "流程模型": "Process models", "用户": "Users",
    "新建用户": "New user", "姓名": "Name", "角色": "Role", "初始密码": "Initial password", "搜索": "Search",
    "全部": "All", "有效": "Active", "已停用": "Deactivated", "角色与部门": "Role and department",
    "重置密码": "Reset password", "停用": "Deactivate", "启用": "Activate", "新密码": "New password",
    "重置": "Reset",
    "停用后该用户的所有登录立即结束，已认领的任务退回队列。确定停用？":
        "Deactivating ends all of this user's sign-ins at once and returns their claimed tasks to the queue. "
        "Deactivate?",
    "通知": "Notifications", "未读": "Unread", "全部标为已读": "Mark all read",
    "通知方式（邮件、群机器人）": "Where else to send them (e-mail, group robot)", "内容": "Message",
    "已读": "Read", "没有通知。": "No notifications.", "通知方式": "Notification channels",
    "通知始终显示在页面右上角的铃铛中；也可以同时发送到邮箱或聊天群机器人（企业微信、钉钉）。发送在后台进行，失败会自动重试。":
        "Notifications always appear under the bell at the top right; they can also go to an e-mail address or a "
        "chat group robot (WeCom, DingTalk). Sending happens in the background and failures are retried.",
    "电子邮件": "E-mail", "例如 li@example.org": "e.g. li@example.org", "聊天机器人 Webhook": "Chat robot webhook",
    "企业微信群机器人的 Webhook 地址，或 wecombot://KEY、dingtalk://TOKEN":
        "A WeCom group robot's webhook URL, or wecombot://KEY, dingtalk://TOKEN",
    "{n} 条未读": "{n} unread", "提交的内容有误：": "The form has errors: ",
    "已重新排队发送": "Queued for sending again", "该发送记录不是失败状态。": "That delivery has not failed.",
    "2–64 位字母、数字、._-": "2–64 letters, digits, . _ -", "密码至少 8 位": "at least 8 characters",
    "未知部门": "unknown department", "已创建用户 {name}": "User {name} created", "未知角色": "unknown role",
    "已停用 {name}": "{name} deactivated", "已启用 {name}": "{name} activated",
    "已重置 {name} 的密码，其所有登录已结束": "{name}'s password was reset; all of their sign-ins ended",
    "已保存 {name}": "{name} saved", "；{n} 个已认领任务已退回队列": "; {n} claimed task(s) returned to the queue",
    "已创建部门": "Department created", "已保存部门 {code}": "Department {code} saved",
    "文件不是 UTF-8 文本（TOML）": "The file is not UTF-8 text (TOML)", "请选择目录文件": "Choose a catalogue file",
    "已载入合同 {code} 的服务目录": "The catalogue of contract {code} was loaded",
    "合同 {code} 的服务目录与已载入的版本相同，未做更改":
        "The catalogue of contract {code} is the same as the loaded one; nothing changed",
    "第 {n} 行不是“YYYY-MM-DD 备注”：{line}": "Line {n} is not “YYYY-MM-DD note”: {line}",
    "已保存 {year} 年的工作日历": "The {year} calendar was saved",
    "已将 {n} 条通知标为已读": "{n} notification(s) marked read", "通知方式已保存": "Notification channels saved",
    "数据库": "Database", "对象存储": "Object store", "日历包": "calendar package", "管理员录入": "entered by an admin",
    "邮件": "E-mail", "新增": "added", "修改": "changed", "不变": "unchanged",
    "日历包 (chinese-calendar)": "calendar package (chinese-calendar)", "新任务": "New task",
    "难度确认": "Difficulty", "超期提醒": "Reminder", "超期升级": "Escalation",
})

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

# The PM's pages: registration, import, item actions; settlement steps in the inbox (api/web/pm.py).
EN.update({
    "0.1 至 5；由项目经理在难度确认环节按复杂度说明确定。":
        "0.1 to 5; the PM confirms it at the difficulty step against the complexity statement.",
    "一件事填写牵头部门。": "For a one-thing, the lead department.",
    "一件事涉及的全部部门（含牵头部门）；每个部门各做一份关联事项需求分析。":
        "Every department the one-thing involves (with the lead); each analyses its linked items.",
    "上传并预览": "Upload and preview", "下载导入模板 (XLSX)": "Download the import template (XLSX)",
    "不能包含空字符或无效字符。": "Must not contain NUL or invalid characters.",
    "不超过 {n} MB。": "At most {n} MB.",
    "不超过 {n} MB，作为交付物“复杂度说明”保存。": "At most {n} MB; kept as the artefact 'complexity statement'.",
    "与第 {0} 行的编码和接入方式相同。": "Same code and mode as row {0}.",
    "事项名称": "Item name", "事项编码": "Item code", "需求部门": "Requesting department",
    "接入渠道": "Channels", "事项已取消": "Item cancelled",
    "事项已登记，流程已启动": "Item registered; its process has started",
    "事项清单文件（.xlsx）": "Item list (.xlsx)", "亮证/用证": "Showing / using",
    "修改结算申报": "Revise the settlement claim",
    "共 {rows} 行，全部通过检查：将新登记 {n} 项，已登记的 {e} 项不会重复登记。":
        "{rows} rows, all valid: {n} items will be registered; {e} already registered will not be repeated.",
    "内容过长。": "Too long.",
    "制证必做；亮证、用证为可选部分，各有设计、联调、测试和上线。":
        "Issuing is always done; showing and using are optional parts, each designed, integrated, tested and released.",
    "参与部门": "Participating departments", "取消": "Cancel", "取消原因": "Reason for cancelling",
    "取消后所有待办任务结束，事项不再计入工作量，且不能恢复。":
        "Cancelling ends every open task; the item is never billable and cannot be restored.",
    "合同与服务类别": "Contract and service line", "合同中没有此服务类别。": "The contract has no such service line.",
    "复杂度说明文件（可选）": "Complexity statement file (optional)", "导入中": "Importing",
    "导入失败，未导入任何事项。": "The import failed; no item was imported.",
    "导入完成：共 {rows} 行，新登记 {n} 项，已登记 {e} 项。各事项的流程已启动。":
        "Import done: {rows} rows, {n} items registered, {e} already registered. Their processes have started.",
    "已退回到所选环节重做": "Sent back to the chosen step", "建议难度系数": "Proposed difficulty",
    "建议难度系数已调整": "Proposed difficulty changed", "当前": "now", "待处理的结算": "Settlements waiting for you",
    "批量导入": "Bulk import", "批量导入事项": "Import items", "按": "per ",
    "接入方式应为“新增接入”或“优化迭代”。": "The mode must be 新增接入 (new) or 优化迭代 (iteration).",
    "操作未执行：": "Not done: ", "改派": "Reassign", "改派任务": "Reassign tasks",
    "无法读取此文件：请上传 .xlsx（或 .csv）文件，不超过 20 MB。":
        "Cannot read this file: upload an .xlsx (or .csv) file of at most 20 MB.",
    "有 {n} 处问题，未导入任何事项。请修改文件后重新上传。":
        "{n} problem(s); nothing was imported. Correct the file and upload it again.",
    "有未知的部门。": "Unknown department(s).",
    "未知的渠道（PC端/移动端/自助终端）。": "Unknown channel (PC/mobile/kiosk).",
    "未知的需求部门。": "Unknown requesting department.", "查看事项列表": "See the item list",
    "检查结果": "Check", "模板列": "Template columns", "此列重复。": "This column appears twice.",
    "此类事项需要业务数据质量检测确认单（测试环节的交付物）。":
        "Items of this type need a business data quality confirmation (evidence of the test step).",
    "此项为空。": "Empty.", "渠道无效。": "Invalid channel.", "渠道重复。": "Channel listed twice.",
    "牵头部门（需求部门）必须是参与部门之一。": "The lead (requesting) department must be a participating department.",
    "登记并启动流程": "Register and start the process", "第 {n} 行": "Row {n}",
    "第一步：上传并预览": "Step 1: upload and preview", "第三方审核申报材料": "Third-party review of the claim",
    "第三步：导入 {n} 项": "Step 3: import {n} items", "第二步：检查预览": "Step 2: check the preview",
    "等待自": "Waiting since", "结算申报": "Settlement claim", "编制并提交结算申报": "Prepare and submit the claim",
    "缺少此列。": "Column missing.", "行": "Row", "表头": "Header", "通过": "OK",
    "该合同下已有相同编码和接入方式的事项。": "The contract already has an item with this code and mode.",
    "该合同没有此服务类别。": "The contract has no such service line.",
    "该服务类别不提供所选渠道。": "The service line is not offered on the chosen channel.",
    "该服务类别不提供此渠道。": "The service line is not offered on this channel.",
    "请先上传文件并预览。": "Upload and preview a file first.",
    "请填写原因（至少 2 个字）。": "Give a reason (at least 2 characters).",
    "请至少选择一个渠道。": "Choose at least one channel.", "请选择参与部门。": "Choose the participating departments.",
    "请选择合同。": "Choose a contract.", "请选择已完成的环节。": "Choose a completed step.",
    "请选择接入方式。": "Choose the mode.", "请选择服务类别。": "Choose a service line.",
    "请选择要导入的文件。": "Choose the file to import.", "请选择需求部门。": "Choose the requesting department.",
    "调整": "Change", "退回到": "Back to", "退回到已完成环节重做": "Send back to a completed step",
    "部门重复。": "A department is listed twice.",
    "难度系数不是 1.0 时，请写明复杂度说明或上传复杂度说明文件。":
        "When the difficulty is not 1.0, write or upload the complexity statement.",
    "难度系数已确认，不能再调整建议值。": "The difficulty is confirmed; the proposal can no longer change.",
    "难度系数应为 0.1 至 5 的数字。": "The difficulty must be a number from 0.1 to 5.",
    "难度系数须在 0.1 到 5 之间。": "The difficulty must be between 0.1 and 5.",
    "需要业务数据质量检测": "Needs a business data quality check", "项目经理操作": "PM actions",
    "预览会检查每一行；任何一行有误，都不会导入。":
        "The preview checks every row; if any row is wrong, nothing is imported.",
})

# Service orders (api/web/service_orders.py).
EN.update({
    "上传需求函（新增）或变更函（迭代），项目经理受理后登记为事项并启动流程。":
        "Upload the requirement letter (new) or change letter (iteration); once the PM accepts it, it becomes an "
        "item and its process starts.",
    "不予受理": "Decline", "全部": "All", "受理为事项": "Accept as an item", "已不予受理": "Declined",
    "已受理": "Accepted", "已受理为事项": "Accepted as item",
    "已受理运营服务单，事项已登记，流程已启动":
        "Service order accepted; the item is registered and its process started",
    "已提交运营服务单，等待项目经理受理": "Service order filed; it waits for the PM",
    "建议服务类别": "Proposed service line", "建议服务类别（可选）": "Proposed service line (optional)",
    "待受理": "Waiting", "待受理的运营服务单": "Service orders waiting for you",
    "提交运营服务单": "File a service order",
    "提出人": "Requested by", "服务单": "Service orders", "期望完成日期": "Wanted by",
    "期望完成日期（可选）": "Wanted by (optional)", "来源运营服务单": "From service order",
    "没有运营服务单。": "No service orders.", "由项目经理确定": "Decided by the PM", "编号": "No.",
    "该运营服务单已处理。": "This service order has already been decided.",
    "请上传需求函。": "Upload the requirement letter.",
    "运营服务单": "Service orders", "需求函文件": "Requirement letter file", "需求名称": "Request",
    "需求说明": "Description",
    "也可在下方流程图中点击已完成的环节。": "Or click a completed step in the diagram below.",
    "登记事项": "Register an item", "取消事项": "Cancel the item", "退回重做": "Send back",
    "调整建议难度系数": "Change the proposed difficulty", "已退回重做": "Sent back for rework",
})

# Monthly operations reports in the inbox and on their page (api/web/reports.py).
EN.update({
    "编写并提交月度运营报告": "Write and submit the monthly report", "修改月度运营报告": "Revise the monthly report",
    "审核月度运营报告": "Review the monthly report", "月度运营报告": "Monthly operations reports",
    "月报": "Monthly reports", "报告正文": "Report text", "意见（退回时必填）": "Comment (required to return)",
    "已提交 {m} 月度运营报告": "Monthly report {m} submitted", "审核意见已提交": "Review submitted",
    "暂无报告。": "No reports yet.", "请先填写报告正文。": "Write the report text first.",
    "该报告当前不能执行此操作。": "This report cannot take that step now.", "月份": "Month",
    "每月结束后 10 个工作日内提交第三方支撑单位；退回后按期修改。":
        "Due to the third party within 10 working days after each month; returned reports are revised in time.",
})
