"""Money: the workload ledger, reports and exports, payments, performance figures, the dashboard and evidence
bundles."""
