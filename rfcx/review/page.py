"""The review page's HTML: one self-contained file (inline CSS, no script, nothing fetched from the network) that
links its pictures and snippets by relative paths (``img/``, ``audio/``), so that the folder opens offline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

import pandas as pd

GENERATOR = "rfcx review"  # the page's <meta name="generator">: how a folder is known as one this command wrote

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2327;
       background: #f6f7f8; }
header, main, nav { max-width: 1200px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 12px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d4d8; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.facts { color: #50575e; margin: 0 0 8px; }
.facts span { margin-right: 14px; white-space: nowrap; }
nav { position: sticky; top: 0; background: #f6f7f8ee; padding-top: 6px; padding-bottom: 6px; z-index: 1;
      border-bottom: 1px solid #e2e4e7; }
nav a { display: inline-block; margin: 2px 3px; padding: 1px 6px; border-radius: 4px; background: #e7eaee;
        color: #1d2327; text-decoration: none; font-size: 12px; }
nav a.empty { color: #8c8f94; }
.note { background: #fff8e5; border-left: 3px solid #dba617; padding: 4px 8px; margin: 6px 0; font-size: 13px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #dcdfe3; padding: 2px 6px; text-align: right; }
th { background: #eef0f2; }
td.l, th.l { text-align: left; }
tr.best td { background: #eaf7ee; }
.bar { display: inline-block; height: 9px; background: #2271b1; vertical-align: middle; margin-right: 6px; }
.bar.oof { background: #8c5ab8; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { display: inline-block; vertical-align: top; margin: 0; background: #fff; border: 1px solid #dcdfe3;
         border-radius: 6px; padding: 6px; }
figure img { display: block; max-width: 100%; }
figcaption { font-size: 12px; color: #3c434a; margin-top: 3px; }
figure.event { width: 322px; }
figure.wide { display: block; width: fit-content; }
figure.event audio { width: 320px; height: 30px; margin-top: 3px; }
figure.clip { width: 722px; margin: 0 12px 12px 0; }
.score { font-weight: 600; color: #1d2327; }
.tp { color: #138a3a; font-weight: 600; } .fp { color: #c62828; font-weight: 600; }
footer { max-width: 1200px; margin: 24px auto; padding: 0 16px; color: #8c8f94; font-size: 12px; }
"""


@dataclass
class EventCard:
    recording_id: str
    split: str
    start_s: float
    end_s: float
    peak_score: float
    mean_score: float
    n_windows: int
    img: str
    audio: str | None = None
    audio_note: str | None = None


@dataclass
class TrainCard:
    recording_id: str
    kind: str  # "TP" or "FP": the kind of box of the species the clip was picked for
    img: str
    caption: str


@dataclass
class SpeciesView:
    species: int
    low_hz: float
    high_hz: float
    n_tp: int
    n_fp: int
    events: list[EventCard] = field(default_factory=list)
    events_note: str | None = None
    train: list[TrainCard] = field(default_factory=list)
    train_note: str | None = None


@dataclass
class RoundSection:
    round: int
    metrics: dict
    loss_png: str | None
    per_class: pd.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass
class Page:
    title: str
    facts: list[tuple[str, str]]
    notes: list[str]
    table: list[dict]  # rfcx.scoring.yardsticks.round_table rows (with oof_box_auc), the rounds beside the yardsticks
    best_round: int | None
    lwlrap_png: str | None
    rounds: list[RoundSection]
    species: list[SpeciesView]
    events_source: str
    pseudo_source: str


def _f(v, digits: int = 4) -> str:  # noqa: ANN001
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _signed(v) -> str:  # noqa: ANN001
    return "–" if v is None else f"{v:+.4f}"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _round_table(page: Page) -> str:
    if not page.table:
        return _note("no complete round with metrics.json")
    sticks = page.table[-1]["yardsticks"]
    out = [
        "<p>Yardsticks on the test clips: "
        + ", ".join(
            f"{name} <b>{_f(sticks.get(key))}</b>"
            for key, name in (
                ("random", "random scores"),
                ("prior_only", "prior-only"),
                ("oracle", "oracle (every call's truth)"),
            )
        )
        + ("" if sticks.get("oracle") is not None else " (no oracle: <code>rfcx train --oracle</code> trains it)")
        + "</p>"
    ]
    out.append(
        "<table><tr><th>round</th><th>test LWLRAP</th><th>vs prior-only</th><th>gap closed</th>"
        "<th>rounds 0..k together</th><th>round 0 trained as long</th><th>pseudo-label gain</th>"
        "<th>OOF clip LWLRAP</th><th>OOF TP-window LWLRAP</th><th>OOF TP-vs-FP AUC</th></tr>"
    )
    for r in page.table:
        prior = sticks.get("prior_only")
        margin = None if r["test_lwlrap"] is None or prior is None else r["test_lwlrap"] - prior
        gap = "–" if r.get("gap_closed") is None else f"{100 * r['gap_closed']:.0f}%"
        best = r["round"] == page.best_round
        out.append(
            f"<tr{' class=best' if best else ''}><td>{r['round']}{' (best)' if best else ''}</td>"
            f"<td>{_f(r['test_lwlrap'])}</td>"
            f"<td>{_signed(margin)}</td><td>{gap}</td>"
            f"<td>{_f(r.get('test_lwlrap_rounds')) if r['round'] else '–'}</td>"
            f"<td>{_f(r.get('equal_compute')) if r['round'] else '–'}</td>"
            f"<td>{_signed(r.get('pseudo_gain'))}</td>"
            f"<td>{_f(r.get('oof_clip_lwlrap'))}</td><td>{_f(r.get('oof_lwlrap'))}</td>"
            f"<td>{_f(r.get('oof_box_auc'))}</td></tr>"
        )
    out.append("</table>")
    if any(r["round"] and r.get("equal_compute") is None for r in page.table):
        out.append(
            _note(
                "round 0 trained as long: the bootstrap trained for as many epochs as a pseudo-label round, the "
                "yardstick of what the pseudo labels add; rfcx train --equal-compute trains it"
            )
        )
    if page.best_round is not None:
        out.append(
            "<p class=facts>best: the round with the best held-out signal (RUNS/best_round.json), what "
            "<code>rfcx infer --round best</code> uses.</p>"
        )
    return "\n".join(out)


def _bar(value, cls: str = "") -> str:  # noqa: ANN001
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f'<span class="bar {cls}" style="width:{max(1, round(60 * value))}px"></span>{value:.3f}'


def _per_class(section: RoundSection) -> str:
    t = section.per_class
    has_test, has_oof = t.test_ap.notna().any(), t.oof_ap.notna().any()
    if not has_test and not has_oof:
        return _note("no per-class AP: neither test labels nor species with both TP and FP boxes out of fold")
    out = [
        '<table><tr><th>species</th><th class=l title="average precision of the test clip scores">test AP</th>'
        '<th title="test clips holding the species">clips</th>'
        '<th class=l title="average precision of the out-of-fold scores of its TP boxes against its FP boxes">'
        'OOF AP, TP vs FP</th><th title="TP / FP boxes of the species">TP / FP</th></tr>'
    ]
    for r in t.itertuples():
        out.append(
            f'<tr><td><a href="#species-{r.species_id}">{r.species_id}</a></td>'
            f"<td class=l>{_bar(r.test_ap)}</td><td>{r.test_positives}</td>"
            f"<td class=l>{_bar(r.oof_ap, 'oof')}</td><td>{r.oof_tp} / {r.oof_fp}</td></tr>"
        )
    out.append(
        f"<tr><th>mean</th><th class=l>{_f(t.test_ap.mean(), 3)}</th><th></th>"
        f"<th class=l>{_f(t.oof_ap.mean(), 3)}</th><th></th></tr></table>"
    )
    return "\n".join(out)


def _round_section(section: RoundSection) -> str:
    m = section.metrics
    out = [
        f'<section id="round-{section.round}"><h2>Round {section.round}</h2>',
        '<p class="facts">'
        + "".join(
            f"<span>{escape(name)} <b>{_f(m.get(key))}</b></span>"
            for key, name in (
                ("test_lwlrap", "test LWLRAP"),
                ("oof_clip_lwlrap", "OOF clip LWLRAP"),
                ("oof_lwlrap", "OOF TP-window LWLRAP"),
                ("oof_box_auc", "OOF TP-vs-FP AUC"),
            )
        )
        + (f"<span>trained in <b>{m['train_seconds'] / 60:.1f} min</b></span>" if m.get("train_seconds") else "")
        + "</p>",
    ]
    out += [_note(n) for n in section.notes]
    out.append('<div class="row">')
    if section.loss_png:
        out.append(
            f'<figure><img src="{escape(section.loss_png)}" alt="round {section.round} training loss" '
            f'width="560"><figcaption>training loss by epoch of every member and fold</figcaption></figure>'
        )
    else:
        out.append(_note(f"round {section.round} has no loss.png"))
    out.append("<div><h3>Per-class average precision</h3>" + _per_class(section) + "</div></div></section>")
    return "\n".join(out)


def _event(card: EventCard) -> str:
    audio = (
        f'<audio controls preload="none" src="{escape(card.audio)}"></audio>'
        if card.audio
        else _note(card.audio_note or "no audio")
    )
    return (
        f'<figure class="event"><img src="{escape(card.img)}" width="320" alt="{escape(card.recording_id)} '
        f'{card.start_s:.1f}-{card.end_s:.1f} s">{audio}<figcaption><span class="score">{card.peak_score:.3f}'
        f"</span> peak (mean {card.mean_score:.3f}, {card.n_windows} window{'s' if card.n_windows != 1 else ''}) "
        f"· {escape(card.recording_id)} ({escape(card.split)}) {card.start_s:.2f}–{card.end_s:.2f} s"
        "</figcaption></figure>"
    )


def _species(view: SpeciesView, page: Page) -> str:
    band = "no TP box: full band" if not view.n_tp else f"band {view.low_hz:.0f}–{view.high_hz:.0f} Hz"
    out = [
        f'<section id="species-{view.species}"><h2>Species {view.species}</h2>',
        f'<p class="facts"><span>{band} (its TP boxes)</span><span>{view.n_tp} TP and {view.n_fp} FP boxes in '
        f"the train set</span></p>",
        f"<h3>Top events <small>({escape(page.events_source)})</small></h3>",
    ]
    if view.events:
        out.append('<div class="row">' + "".join(_event(c) for c in view.events) + "</div>")
    if view.events_note:
        out.append(_note(view.events_note))
    out.append(
        f"<h3>Train boxes and the pseudo labels they produced <small>({escape(page.pseudo_source)})</small></h3>"
    )
    for card in view.train:
        out.append(
            f'<figure class="clip"><img src="{escape(card.img)}" width="720" alt="{escape(card.recording_id)}">'
            f'<figcaption><span class="{card.kind.lower()}">{card.kind}</span> {escape(card.caption)}'
            "</figcaption></figure>"
        )
    if view.train_note:
        out.append(_note(view.train_note))
    out.append("</section>")
    return "\n".join(out)


def render(page: Page) -> str:
    """The page as HTML text."""
    nav = ['<a href="#rounds">rounds</a>'] + [f'<a href="#round-{s.round}">round {s.round}</a>' for s in page.rounds]
    nav += [
        f'<a href="#species-{v.species}"{"" if v.events or v.train else " class=empty"}>{v.species}</a>'
        for v in page.species
    ]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(page.title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{escape(page.title)}</h1><p class=facts>"
        + "".join(f"<span>{escape(k)}: <b>{escape(v)}</b></span>" for k, v in page.facts)
        + "</p>"
        + "".join(_note(n) for n in page.notes)
        + "</header>",
        "<nav>"
        + " ".join(nav[: 1 + len(page.rounds)])
        + " · species "
        + " ".join(nav[1 + len(page.rounds) :])
        + "</nav>",
        "<main>",
        '<section id="rounds"><h2>Rounds beside the yardsticks</h2>',
        _round_table(page),
    ]
    if page.lwlrap_png:
        parts.append(
            f'<figure><img src="{escape(page.lwlrap_png)}" width="528" alt="held-out quality by round">'
            "<figcaption>held-out quality by round (RUNS/lwlrap.png)</figcaption></figure>"
        )
    parts.append("</section>")
    parts += [_round_section(s) for s in page.rounds]
    parts += [_species(v, page) for v in page.species]
    parts += [
        "</main>",
        f"<footer>written by <code>{GENERATOR}</code>; the folder holds everything it shows "
        "(img/, audio/) and opens offline.</footer>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)
