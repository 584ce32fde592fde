"""The run store: folder layout, index, record, writer, history, evaluation."""
