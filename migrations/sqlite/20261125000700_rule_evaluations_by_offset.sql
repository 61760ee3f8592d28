-- `aiflow event trace`: the rule evaluations of one event.
CREATE INDEX IF NOT EXISTS rule_evaluations_offset ON rule_evaluations (event_offset);
