"""Automation rules: ordered rules with a trigger, conditions and actions (definitions), how
conditions are judged (conditions), what actions do (actions), and the engine that applies
them to the event log and to time (engine), with a dry run."""
