"""``rfcx review``: a static HTML page of a run, written into a folder that opens offline.

    OUT/index.html          the page (inline CSS, no script, relative links only)
    OUT/img/*.png           the rounds' plots, the events' spectrograms, the train clips with boxes and pseudo labels
    OUT/audio/*.flac        a short snippet of each event, cut from the data folder's recording

The page shows, per round, the scores beside the yardsticks (what ``rfcx report`` prints), the loss curves and
the per-class average precision; per species, the top events (of a detections file, or of the round's ensemble
on the store's test clips) each with its spectrogram, snippet and score, and train clips with their TP/FP boxes
above the pseudo labels each round made of them. What a run lacks (test labels, pseudo labels, audio, a later
round) becomes a note on the page, never an error.

Modules: :mod:`.writer` holds :func:`write_review`, the outline; :mod:`.content` gathers what is shown,
:mod:`.figures` draws, :mod:`.snippets` cuts audio, :mod:`.page` writes the HTML, :mod:`.browser` screenshots it.
"""

from .writer import ReviewSummary, check_out, write_review

__all__ = ["ReviewSummary", "check_out", "write_review"]
