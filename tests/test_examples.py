"""Every application recipe in examples/ runs end to end with --smoke (tiny random model, small slices).

Each runs in its own subprocess, as a user would start it, so a recipe that
only works inside pytest's process (or leaks state into it) is caught.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# recipe -> (datasets it needs, a line fragment its final answer always prints)
RECIPES = {
    "intent_routing": (["atis_intent"], '"queue":'),
    "sentiment_monitor": (["tweet_sentiment"], "scored by the served model"),
    "news_tagging": (["bbc_topics", "tweet_sentiment"], '"topic":'),
    "condition_classifier": (["drug_reviews"], '"needs_review":'),
    "ner_service": (["atis_slots"], '"entities":'),
    "product_photos": (["fashion_mnist"], '"shelf":'),
    "faq_answers": (["faq_pairs"], '"answer":'),
    "recommendations": ([], '"already_rated":'),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_smoke_run(recipe, tmp_path):
    from tfpipeline.data.catalog import is_available

    datasets, expected = RECIPES[recipe]
    missing = [d for d in datasets if not is_available(d)]
    if missing:
        pytest.skip(f"data package for {missing} not installed")
    proc = subprocess.run([sys.executable, os.path.join("examples", f"{recipe}.py"), "--smoke",
                           "--output-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert expected in proc.stdout, output[-3000:]
    assert "[serve] REST API at http://127.0.0.1:" in proc.stdout, "the recipe did not answer from a server"
