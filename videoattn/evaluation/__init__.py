"""Evaluation: validation during training and multi-view testing (:mod:`.evaluate`,
:mod:`.tester`), the metrics (:mod:`.metrics`) and the test report files (:mod:`.report`)."""
