"""The BPMN runtime: the SpiffWorkflow adapter (the only module that touches the library), the expression
sandbox, model checks, the work-kind registry read from the models, timers, diagrams."""
