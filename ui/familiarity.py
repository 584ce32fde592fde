"""Evaluate's "None of these" section: known test photos it would call unknown, and a try-out.

An admin can upload photos of other things and see which the model would answer with
"None of these"; viewers see the measured share only.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.results import familiarity
from core.runs.store import Run
from ui import predict as ui_predict
from ui import roles, uploads
from ui.errors import show_user_errors

TRY_KEY = "tl_eval_unknown_try"


def section(run: Run) -> None:
    """The explanation, the share of test photos called unknown, and the admin's try-out."""
    facts = familiarity.run_facts(run)
    st.markdown(familiarity.summary_text(facts, len(run.labels)))
    test = (facts or {}).get("test") or {}
    if test.get("photos"):
        st.metric("Test photos of the known classes answered \"None of these\"",
                  f"{test['called_unknown']} of {test['photos']}",
                  help="False alarms: photos of classes the model knows that it would still "
                       "call unfamiliar. The line is chosen for about "
                       f"{float(facts.get('quantile', familiarity.QUANTILE)):.0%}.")
        if test.get("files"):
            with st.expander("Which test photos"):
                st.dataframe(pd.DataFrame({"Photo": test["files"]}), hide_index=True,
                             width="stretch")
    if not roles.is_admin():
        st.caption("An admin can try photos of other things here.")
        return
    files = uploads.within_limit(st.file_uploader(
        "Try photos of other things", type=ui_predict.PHOTO_TYPES, accept_multiple_files=True,
        key=TRY_KEY, max_upload_size=uploads.PHOTO_MB,
        help="Photos of none of the classes: see which the model would answer with \"None "
             f"of these\". Up to {uploads.PHOTO_MB} MB each, {uploads.PHOTOS_AT_ONCE} at once.",
    ) or [], at_most=uploads.PHOTOS_AT_ONCE, key=TRY_KEY)
    if not files and not uploads.has_kept(TRY_KEY):
        return
    with show_user_errors("Cannot try these photos:") as trying, st.spinner("Looking..."):
        predictor = ui_predict.predictor(run.run_dir)
        # Each photo is read once and released; its answer stays while the uploader lists it.
        photos = ui_predict.kept_photos(TRY_KEY, files, predictor)
    if trying.failed or not photos:
        return
    predictions = [photo.prediction for photo in photos]
    if predictor.familiarity is None:
        st.warning(f"This run cannot say \"None of these\": {predictor.familiarity_problem}",
                   icon=":material/warning:")
        return
    called = sum(bool(p.unknown) for p in predictions)
    st.markdown(f"**{called} of {len(predictions)}** would be answered \"None of these\".")
    st.dataframe(pd.DataFrame([{
        "Photo": p.file, "Answer": (familiarity.NONE_OF_THESE if p.unknown else p.label)
        if p.ok else None, "Closest class": p.label, "Familiarity": p.familiarity,
        "Line": p.familiarity_threshold, "Problem": p.error,
    } for p in predictions]), hide_index=True, width="stretch", column_config={
        "Familiarity": st.column_config.NumberColumn(
            format="%.3f", help="Similarity to the nearest training photos (higher: more "
                                "familiar)."),
        "Line": st.column_config.NumberColumn(
            format="%.3f", help="Below this, the answer is \"None of these\"."),
    })
