from spark_jobs.evaluation.report import format_report


def test_the_ranker_rows_join_the_evaluation_table() -> None:
    test = {name: {"ndcg@10": v, "recall@20": v * 2, "hr@10": v * 3, "queries": 40}
            for name, v in (("reranked", 0.3), ("als", 0.2), ("popular", 0.05))}  # fmt: skip
    test["reranked"]["ndcg_vs_als"] = 1.5
    manifest = {"metrics": {"test": test}, "timeline": {"test_start": "2019-10-07T00:00:00+00:00"},
                "dataset": {"horizon": 3600.0}}  # fmt: skip
    text = format_report(None, [], "x.csv", manifest)
    assert "1.50x the ALS order" in text and "next 60 min" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:] if line and line.split()[0] in test}
    assert rows["reranked"][:2] == ["0.3000", "0.6000"] and rows["popular"][-1] == "40"
    assert format_report(None, [], "x.csv", None) == ""
