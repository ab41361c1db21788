"""Reports: the evaluation report's figures (:mod:`.figures`), their statistics (:mod:`.stats`),
drawings (:mod:`.plots`) and self-contained HTML pages (:mod:`.html`, :mod:`.inspection_html`)."""
