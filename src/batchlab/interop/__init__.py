"""Other tools' formats: loss histories they wrote (logs), and exports of a study to them (export)."""
