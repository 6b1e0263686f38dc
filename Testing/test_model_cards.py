"""Model cards quote the quality report: their generated block must match the committed report."""

from __future__ import annotations

import json

import pytest

from benchmarks.model_cards import BEGIN, CARDS, END, REPORT, card_section, update_card, update_cards


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(REPORT.read_text(encoding="utf-8"))


def test_every_shipped_package_has_a_card_with_the_generated_block(report):
    from JointSRSegLib.packaging import available_models

    builtin = {info.id for info in available_models() if info.source == "builtin"}
    cards = {card.stem for card in CARDS.glob("*.md")}
    assert builtin <= cards
    for card in CARDS.glob("*.md"):
        text = card.read_text(encoding="utf-8")
        assert text.count(BEGIN) == 1 and text.count(END) == 1, card


def test_committed_cards_match_the_committed_report(report, tmp_path):
    for card in CARDS.glob("*.md"):
        copy = tmp_path / card.name
        copy.write_text(card.read_text(encoding="utf-8"))
        assert not update_card(copy, report), f"{card.name}: out of date; run python -m benchmarks.model_cards"


def test_section_quotes_the_package_rows_and_bspline(report):
    package = next(p for p in report["packages"] if any(r["method"] == p and "psnr" in r for r in report["rows"]))
    section = card_section(report, package)
    mine = [e for e in report["summary"] if e["method"] == package]
    assert section.startswith(BEGIN) and section.endswith(END)
    for entry in mine:
        setting = f"| {entry['protocol']} | ×{entry['factor']} |"
        assert f"{setting} `{package}` | {entry['cases']} | {entry['psnr']:.2f} |" in section
        assert f"{setting} `bspline` |" in section
    other = next(p for p in report["packages"] if p != package)
    assert f"`{other}`" not in section


def test_update_rewrites_only_the_block_and_refuses_a_card_without_one(report, tmp_path):
    card = tmp_path / "some-package.md"
    text = f"# Title\n\nhand-written text\n\n{BEGIN}\nstale numbers 99.9 dB\n{END}\n\n## After\nmore\n"
    card.write_text(text, encoding="utf-8")
    assert update_cards(report, tmp_path) == [card]
    text = card.read_text(encoding="utf-8")
    assert "stale numbers" not in text and "is not scored in this report" in text
    assert text.startswith("# Title\n\nhand-written text\n\n") and text.endswith("\n\n## After\nmore\n")
    assert update_cards(report, tmp_path) == []  # idempotent
    bare = tmp_path / "bare.md"
    bare.write_text("# no block\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bare.md: no generated quality-report block"):
        update_card(bare, report)
    assert bare.read_text(encoding="utf-8") == "# no block\n"
