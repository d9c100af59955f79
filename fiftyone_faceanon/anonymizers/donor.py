"""``donor``: a synthetic face of a person who does not exist, matched to the face it replaces.

The bank (:mod:`fiftyone_faceanon.donors`, shipped as ``models/donors_sfhq.npz``) holds aligned
donor crops with their 68 landmarks and attributes measured by
:func:`~fiftyone_faceanon.donors.face_attributes`. For each face the same attributes are measured
on the pipeline's crop and every donor gets the matching cost

    ``c(d) = sum_k w_k ((a_k - d_k) / sigma_k)^2 + w_l max(0, z(d))^2``

over pose (yaw, pitch), expression state (mouth opening, teeth, eye opening), skin tone (Cb, Cr,
luma), face proportions (jaw width over face height), beard, glasses and, for a face that will
be verified, which side the light comes from (``shade``, :data:`VERIFIED_ONLY`, on its first
:data:`SKIN_TRIES` tries, every try of a face redone to unlink it), and, when the pipeline has
the face's judge embeddings (with or without verification), the estimated gender and age and,
on those tries, the skin luma (linear heads on its
FaceNet-CASIA and dlib embeddings, ``models/demographics.npz`` and ``models/skin_luma.npz``,
applied to the donors' embeddings too; for a donor, the gender a person saw where the bank
records one, :func:`seen_gender`), and the face's glasses are then read from its
FaceNet-CASIA embedding as well (:func:`glasses`; a donor's glasses are the larger of that
head's and the edge measure's, :data:`GLASSES_HEAD`);
``sigma_k`` is a fixed tolerance per attribute (:data:`TERMS`). With the judge embeddings the
last term, :func:`likeness`, puts off donors the judges find more like the face than the bank's
average donor (weight ``w_l``, :data:`LIKENESS`). A face that will be verified also adds
``w_e ||p(d) - p(f)||^2 / sigma_e^2`` over fer's seven expression probabilities of the donor's
crop and of its own (:data:`EXPRESSION`).
The face's candidate order is its ``CANDIDATES`` cheapest
donors shuffled by the face's seeded generator, then the rest by cost, so different people (and
different photos of one person) get different donors while each stays a good match; verification
retries take the next candidate. The chosen donor crop is warped piecewise-affinely (the ``ksame``
warp) onto the target landmarks at the face's own crop size (the inside of a mouth opened wider
than the donor's from another donor's open mouth: :data:`MOUTH_FROM`) and prepared the way an
inpainting generator's output would look: its brightness is scaled to the original's over the
region, and outside the region it is the original crop. The pipeline then relights,
colour-matches and blends it (paper III-B-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay
from scipy.special import softmax

from ..mesh import Mesh, face_mesh, render, yaw
from .base import Anonymizer, register
from .ksame import control_points, piecewise_affine_warp

#: Weight and tolerance ``(w_k, sigma_k)`` of each attribute in the matching cost
#: (``proportion``, ``female`` and ``log_age`` are computed here, the rest by
#: ``donors.face_attributes``).
TERMS = {
    "yaw": (1.0, 8.0), "pitch": (0.5, 8.0), "mouth_open": (1.5, 0.05), "teeth": (0.5, 0.2),
    "eye_open": (1.0, 0.04), "cb": (2.0, 0.015), "cr": (2.0, 0.015), "luma": (1.0, 0.08),
    "proportion": (0.3, 0.1), "beard": (2.0, 0.2), "glasses": (1.0, 0.25),
    "female": (2.0, 0.25), "log_age": (1.0, 0.3), "skin": (2.0, 0.04), "shade": (1.0, 0.2),
}
#: Weight and tolerance ``(w_e, sigma_e)`` of the expression term, ``w_e ||p(d) - p(f)||^2 /
#: sigma_e^2``, over fer's class probabilities of the donor's and the face's crops
#: (:func:`~fiftyone_faceanon.donors.expressions`). The output reads as its donor's expression
#: more than as the face's: of the LFW DevTest 500's verified faces (seed 0) whose donor fer
#: read as the face's class, 82.6% kept their class, of the others 31.3% (51.0% in all;
#: ``mouth_open`` and ``teeth`` see a smile's mouth, not its eyes and cheeks). fer is also the
#: classifier the emotion match metric reads, so that metric no longer measures expression
#: independently of the donor choice; NME-51 still does. With verification only: without it,
#: on the same images, it took re-ID (dlib / FaceNet-CASIA) from 6.2% / 15.6% to 6.9% / 17.2%
#: and emotion match from 57.5% to 58.2% (docs/benchmarks.md, "Donors of the face's
#: expression").
EXPRESSION = (1.0, 0.5)
#: Terms left out for a face that will not be verified (``--no-verify``). ``shade``: a donor
#: lit from the face's side is more like the face to the judges, and nothing redoes a try they
#: would match: on the LFW DevTest 500 (seed 0) the term took re-ID without verification from
#: 6.4% / 15.4% (dlib / FaceNet-CASIA) to 7.4% / 17.5%; with verification (seeds 0-2) it took
#: Si-MSE from 0.030-0.031 to 0.026-0.027 and left side-lit donors' half-face shadows off
#: evenly lit faces (docs/benchmarks.md, "Donors lit like the face").
VERIFIED_ONLY = ("shade",)
#: Weight ``w_l`` of :func:`likeness` in the matching cost. A donor of the face's gender and
#: age is nearer the face in the judges' eyes, and a video track is verified only when all of
#: its up to 24 judged frames are: without the term, 6 of the Hamilton clip's 12 tracks failed
#: closed at each of seeds 0-2; with weight 1, 4, 5 and 4 (weight 3: 4, 5, 5; 10: 5, 5 at
#: seeds 1-2), though on the pan over the group photo 3 of 6 at each seed instead of 2, 3, 2.
#: On images it leaves fewer faces to later tries, whose stronger geometry and wider region
#: also made photos of one person harder to link (docs/benchmarks.md, "Donors unlike the
#: face").
LIKENESS = 1.0
#: Weight ``w_l`` and offset ``o_l`` of the term, ``w_l max(0, z(d) + o_l)^2``, for a face that
#: is not verified (``--no-verify``): nothing redoes a try whose donor leaves it matched, so the
#: term weighs more and starts a standard deviation below the bank's average likeness. On the
#: LFW DevTest 500 without verification it takes the re-ID rates (dlib / FaceNet-CASIA) from
#: 9.4% / 24.4% (the term as verified) to 6.4% / 15.2%; weight 10 gave 4.8% / 15.4% and photos
#: of one person matched each other more often (10.9% against 7.9%; docs/benchmarks.md,
#: "Without verification: the judges read each face").
LIKENESS_UNVERIFIED = (3.0, 1.0)
#: Terms that need the face's judge embeddings (:data:`DEMOGRAPHIC_JUDGES`).
DEMOGRAPHIC = ("female", "log_age", "skin")
#: Terms that count on a face's first :data:`SKIN_TRIES` tries only (on every try of a face
#: redone to unlink it): its skin tone and the side its light comes from.
EARLY = ("skin", "shade")
#: How many tries match the donor's skin tone and lighting (:data:`EARLY`). A donor of the
#: face's skin tone is more like it to the judges: with the ``skin`` term on every try, the
#: cross-fade clip's dark skinned man failed closed at seeds 0-2 (every frame of his track
#: blurred), each of his five donors matched by dlib on some of his 24 judged frames; with
#: ``shade`` on every try, at seed 1. Later tries, with the stronger geometry and the wider
#: region, choose without them (docs/benchmarks.md, "Skin tone read from the judges'
#: embeddings", "Donors lit like the face"), but for the :data:`SKIN_FAR` rule, which holds at
#: every try of a verified face but its last. A face anonymized again to unlink it keeps them,
#: and the :data:`SKIN_FAR` rule, at every try (``redo`` in :meth:`Donor.choose`): it avoids
#: many donors (its look-alikes' and those close to its partners: 160 to 360 of the 759 for
#: Abdullah Gul's photos of the LFW DevTest 500), and ranked without them its later tries
#: drew donors of another skin tone (dark-skinned men on four of his photos at seed 0). A
#: redo that leaves its image unverified is not kept (:func:`~.batch.unlink_run`), so this
#: fails no face closed (docs/benchmarks.md, "Redone faces keep their skin tone, children get
#: children").
SKIN_TRIES = 2
#: How many of the cheapest donors the seed chooses among.
CANDIDATES = 6
#: A face whose ``glasses`` (:func:`glasses` with verification, else the edge measure) is under
#: the first never gets a donor whose measure is over the second: as a cost term alone, glasses
#: drawn onto a bare face (the most visible wrong attribute) reached 24 of 554 verified LFW faces.
NO_GLASSES, GLASSES = 0.3, 0.5
#: Read by the head, a face under :data:`KEEP_FRAMES` (which keeps no frames of its own) never
#: gets a donor whose measure is ``SURE_GLASSES`` or more: Kofi_Annan_0017 (LFW, bare-faced,
#: 0.38 by the head) drew one (0.93) at unlinking's redo. Of the bank's 68 donors between
#: ``GLASSES`` and this line 5 wear glasses by eye. Ruling out all 126 over ``GLASSES`` took
#: them from a glasses wearer the head is unsure of too (Alvaro Uribe's thin frames, 0.35-0.49):
#: his 35 LFW photos, unlinked from that smaller bank, were linked in 6 pairs instead of 2 at
#: seed 1 (docs/benchmarks.md, "Faces the glasses head is unsure of").
SURE_GLASSES = 0.8
#: A face whose ``teeth`` is at least ``SHOWS_TEETH`` never gets a donor whose mouth is open
#: ``DARK_OPEN`` or more (:func:`~fiftyone_faceanon.donors.mouth_opening`) with ``teeth`` under
#: ``DARK_TEETH``: warped onto a smile, such a donor's dark cavity replaces the teeth and turns
#: the smile into a scream. As cost terms alone (teeth and mouth opening) this was rare on
#: photos, but the bank has few smiling donors with teeth of some skin tones: a smiling dark
#: skinned man of the cross-fade clip drew a wide-eyed, open-mouthed donor, whose landmarks then
#: jittered (docs/video.md). It leaves out 47 of the 759 donors for such a face.
SHOWS_TEETH, DARK_OPEN, DARK_TEETH = 0.5, 0.1, 0.1
#: A face whose lips are under ``PALE_LIPS`` redder than its skin
#: (:func:`~fiftyone_faceanon.donors.face_attributes`' ``lips``) never gets a donor wearing
#: lipstick: one whose lips are ``LIPSTICK`` or more and whom the age head reads as
#: ``LIPSTICK_AGE`` or older (a child's lips read as red as lipstick). The warp and the colour
#: transfer carry a donor's lipstick onto the face as it is. As a cost term (weight 1,
#: tolerance 0.03) it moved no donor out of the demo's Grace Hopper's (0.03) twelve cheapest,
#: where a donor wearing lipstick (0.08) stood eighth and her second try drew it. It leaves
#: out 17 of the 759 donors; 97.6% of the LFW DevTest 500's faces read under ``PALE_LIPS``.
#: Leaving out the children and teenagers over ``LIPSTICK`` too (53 donors) cost the UTKFace
#: 500's emotion match 3.0 and 1.6 points at seeds 0 and 1; a line relative to the face's own
#: reading (no donor over it by 0.04) left out a sixth of the bank for a face of the median
#: reading, and more faces failed closed (docs/benchmarks.md, "No lipstick on pale lips").
PALE_LIPS, LIPSTICK, LIPSTICK_AGE = 0.05, 0.065, 18
#: A face whose P(female) (:func:`demographics`, calibrated) is at least ``SURE_FACE`` never
#: gets a donor at most ``1 - SURE_DONOR``, and one at most ``1 - SURE_FACE`` none at least
#: ``SURE_DONOR``. As a cost term alone, the age and eye-opening terms of the bank's few old
#: women outweighed it: Grace Hopper (0.74) kept an old man (0.06) among her six cheapest
#: donors, and the seed chose him on the demo contact sheet. With the rule, of the UTKFace 500's
#: adults 93.1% get a donor of their gender (where the bank's two gender estimates agree),
#: against 89.1% before the calibration and 91.6% with it alone (docs/donors.md). A donor whose
#: gender a person saw counts as sure of it (:func:`seen_gender`).
SURE_FACE, SURE_DONOR = 0.7, 0.8
#: A face that will be verified never gets a donor under ``AGE_FLOOR`` of its age by the heads
#: (in ``1 + age``): as a cost term alone, skin tone and expression outweighed age, and Grace
#: Hopper (65 by the head) had a smooth young face inside her own wrinkled cheeks. Tried before
#: the seen genders (:func:`seen_gender`), the rule gave her old men the gender head was unsure
#: of; now every donor of 50 or more but one is sure of its gender. Without verification it
#: took re-ID on the LFW DevTest 500 (seeds 0-2, dlib / FaceNet-CASIA) from 5.8% / 15.7% to
#: 6.1% / 17.9%: a donor of the face's age is more like it, and nothing redoes the try
#: (docs/benchmarks.md, "Old faces get old donors, beardless faces no beards").
AGE_FLOOR = 0.5
#: On a verified face's early tries (its first :data:`SKIN_TRIES`, every try of a face redone
#: to unlink it), no donor over ``AGE_CEILING`` times its age by the heads (in ``1 + age``):
#: the ``log_age`` term alone was outweighed by the likeness term, which puts off donors the
#: judges find like the face, and for a child those are other children: on the UTKFace 500
#: (seed 0), babies redone to unlink them came out with grown men's and old women's faces, and
#: 118 of 497 faces got a donor more than 20 years from them (56 with the rule). It leaves 95
#: donors for a face read as 1 year old, 226 for one of 5; with a redo's skin tone
#: (:data:`SKIN_TRIES`) it cost the UTKFace 500's emotion match 3.7-4.0 points at seeds 0 and 1
#: (fewer donors are left to match a child's expression) and lowered its NME-51 by 4-6%
#: (docs/benchmarks.md, "Redone faces keep their skin tone, children get children").
AGE_CEILING = 2.0
#: A face whose ``beard`` is under ``BEARDLESS`` never gets a donor whose ``beard`` is
#: ``BEARDED`` or more (a full beard or a heavy moustache, 77 of the 759 donors): as a cost term
#: alone it was outweighed where few donors are left, as by :data:`AGE_FLOOR` on the demo's
#: grayscale cameraman (read 55 years old, beard 0.45), whose six cheapest then held a man with
#: a full black beard (0.97), and the seed chose him. On the LFW DevTest 500 (seed 0) 7
#: verified (5 before the floor) and 4 unverified beardless faces got one; with the rule, none.
#: Nor one on which a person saw facial hair (the bank's ``facial_hair_seen``: 145 of the 308
#: men; the measure reads 43 of them under 0.5, light beards and stubble as low as 0.02).
BEARDLESS, BEARDED = 0.5, 0.8
#: On every try of a verified face but its last (with its judge embeddings), a donor
#: whose skin is darker than the face's by more than ``SKIN_FAR[0]`` in measured luma (``luma``,
#: the crop's and the donor photo's) *and* by more than ``SKIN_FAR[1]`` in the luma the head
#: reads in the embeddings (``skin``, :func:`skin_luma`), or lighter by both, is never a
#: candidate. As cost terms alone the two were outweighed by beard, age and expression: a
#: light-skinned man with a moustache (luma 0.46, head 0.54) kept a dark-skinned bearded donor
#: (0.29, 0.46) among his six cheapest, and unlinking's redo chose it. Each measure alone is
#: unreliable (the crop's luma follows the exposure; the head regresses to the mean), so both
#: must agree. It leaves out about 170 to 470 of the 759 donors, most for the darkest and
#: lightest faces. Without verification it took re-ID on the LFW DevTest 500 (seed 0, dlib /
#: FaceNet-CASIA) from 6.2% / 15.6% to 7.6% / 17.0% (a donor of the face's skin tone is more
#: like it, and nothing redoes the try), so it applies with verification only, as
#: :data:`AGE_FLOOR` does (docs/benchmarks.md, "Many photos of one person"). Until stop 63 it
#: held on the first :data:`SKIN_TRIES` tries only, and 18, 21 and 24 of the 565 faces of the
#: LFW DevTest 500 (seeds 0-2) were verified at a later try with such a donor: light-skinned
#: men with a Black man's features, nose and lips. Kept to the fifth try, 2, 2 and 1 (at their
#: sixth), with 2, 5 and 5 faces failed closed against 6, 5 and 5 (on the UTKFace 500 at seed
#: 0, 5 against 3: the three new ones had been verified with another skin tone's features);
#: kept at the last try too, 4 at seed 0; the skin terms too until the last, 6, and one
#: person's photos were linked as often as two people's (docs/benchmarks.md, "A later try
#: keeps the face's skin tone").
SKIN_FAR = (0.12, 0.05)
#: With ``same_group`` (``--same-group``, off by default), on a face's early tries and every
#: other but its last (as :data:`SKIN_FAR`; with its judge embeddings), but not for a redo, no
#: donor that the group head (:func:`groups`) reads as one of UTKFace's codes at
#: ``SURE_GROUP[0]`` or more where it reads the face as that code under ``SURE_GROUP[1]``, and
#: for a face it reads as one code at ``FACE_GROUP`` or more, only donors whose likeliest code is
#: that one (:func:`other_group`). Skin tone (the ``skin`` term, :data:`SKIN_FAR`) does not tell
#: East Asian from white faces: by default (seed 0) the head reads the same code on the original
#: and the output (the metrics suite's ``group_match``) for 33.1% of the LFW DevTest 500's faces
#: and 24.3% of the UTKFace 500's (5% of its East Asian ones), and Al_Pacino_0001 has an East
#: Asian man's face; with the rule, 55.6% and 44.9%. The first part alone (the head is sure of
#: few LFW faces) gave 44.2% and 35.8%. A redo needs the whole bank to keep one person's photos
#: apart: held to the rule, they were linked three times as often as two people's. Off by
#: default: a donor of the face's group is more like it to the judges, so more faces go past
#: their first try, to the stronger geometry and the wider region; the emotion match fell from
#: 55.6% to 53.1% (LFW) and 59.6% to 55.7% (UTKFace), and 9 and 12 images of 500 failed closed
#: against 3 and 4 (docs/benchmarks.md, "A donor of the face's apparent group").
SURE_GROUP, FACE_GROUP = (0.7, 0.1), 0.5
#: At every try of a verified face but its last, not a redo's, a donor whose eyes read more
#: than ``EYES_FAR`` lighter than the face's (``eyes``,
#: :func:`~fiftyone_faceanon.iris.light_eyes`: L* - 2 b* in the iris discs) is never a
#: candidate: nothing else in the cost sees eye colour, and on the UTKFace 500 (verified,
#: seed 0, stop 63) at least 16 faces of race codes 1 and 2, most of them East Asian children,
#: came out with blue, green or teal eyes. A face's own irises are read at its own resolution,
#: where a light iris blurs into its pupil and lashes and reads darker than a donor's at 384
#: px, so the rule is relative: a face at the LFW DevTest 500's median (-1) gets no donor over
#: 24 (141 of the 759, most of them blue, grey or green eyes by eye). A face whose eyes are
#: hidden (NaN) or seen through the glasses it keeps (:data:`KEEP_FRAMES`) is not held to it:
#: held to it, the demo's Grace Hopper (read -1.9 through her lenses) lost her old donors,
#: which often read light, and got a young woman's face. A redo, which needs the whole bank to
#: keep one person's photos apart, is not either: held to it, one person's photos were linked
#: more often than two people's at seed 0 (0.55% against 0.53%, FaceNet-CASIA). Held to the
#: first two tries only, 49 of 555 verified faces kept a donor reading more than 25 over them
#: (seed 0; 104 without the rule, 31 with it), and most of the UTKFace babies given blue eyes
#: kept them. The rule cost the LFW DevTest 500's emotion match 0.7 points over seeds 0-2
#: (56.7% against 57.4%; docs/benchmarks.md, "Dark eyes keep dark eyes"). With verification
#: only: held to it at their one try, faces without verification lost their much lighter eyes
#: too (16 of 562 left against 109, seed 0), but 0.4-0.5 points more were re-identified by
#: dlib and 0.5-1.2 by FaceNet-CASIA at each of seeds 0-2, with no later try to redo them.
EYES_FAR = 25.0
#: A donor whose eyes read at most ``EYES_DARK`` is never ruled out by :data:`EYES_FAR`: its
#: eyes are dark by eye (on the bank, dark brown and black eyes read about -10 to 25, and from
#: 15 up hazel and green ones mix in; docs/donors.md, "Eye colour"). A face read very dark,
#: through the lenses of glasses it does not keep or in a dim photo, would otherwise lose
#: nearly every donor: Alan_Dershowitz_0001, read -28.8 through his glasses, kept 2 of his 32
#: candidates, and got a donor lit hard from one side (docs/benchmarks.md, "Dark eyes keep
#: dark eyes").
EYES_DARK = 15.0
#: A face whose glasses head (:func:`glasses`) scores at least this keeps its own frames
#: (:func:`keeps_frames`): a donor's glasses would land beside them, so it gets a donor without.
#: Matched to donors with glasses instead, 16 of 36 verified LFW wearers looked at came out
#: bare: the bank has few such donors, most of them young (docs/donors.md).
KEEP_FRAMES = 0.5
#: The hull of a donor's brows, eyes, nose, mouth and chin (jaw points 3-13), grown by
#: SKIN_FEATURES of its eye distance: what is drawn onto a turned face or over a wide region
#: whatever its colour (:meth:`Donor.donor_face`), a beard or shadow there being the donor's
#: face, not something across it.
SKIN_INNER = np.r_[3:14, 17:68]
SKIN_FEATURES = 0.05
#: Linear heads for gender and age on the concatenated embeddings of
#: :data:`DEMOGRAPHIC_JUDGES` (``scripts/build_demographics_head.py``): on FaceNet-CASIA's
#: alone they told the gender of 67% of the synthetic donors (labelled by eye), with dlib's
#: beside it 96% (docs/donors.md, "Gender and age").
DEMOGRAPHICS = "demographics.npz"
DEMOGRAPHIC_JUDGES = ("facenet_casia", "dlib")
#: Temperature ``T`` of the gender head, ``P(female) = sigmoid(T * logit)``. Fitted with a strong
#: L2 penalty so that it carries over to the donors, the head is underconfident: of held-out
#: UTKFace faces it puts between 0.6 and 0.8, 82% are women. An underconfident head weighs
#: gender too little in the matching cost (Grace Hopper, at 0.64, got an old man's face on the
#: video contact sheet). Fitted by maximum likelihood on 995 UTKFace chips of the head's
#: training part (``scripts/calibrate_gender_head.py``: 1.83; log loss on the UTKFace 500,
#: which the head never saw, 0.338 at 1 and 0.308 at 1.83); it changes no face's or donor's
#: gender, only how sure the cost is of it (docs/donors.md).
GENDER_TEMPERATURE = 1.8
#: The face's ``glasses`` when the pipeline has its FaceNet-CASIA embedding (:func:`glasses`):
#: the edge measure, fitted on synthetic faces, hardly ranks LFW's glasses above bare faces
#: (ROC AUC 0.68; the head 0.94, ``scripts/build_glasses_head.py``). A donor's is the larger of
#: the two: on the bank each misses glasses the other finds (the head, thin and clear frames;
#: the edge measure, some dark and heavy ones), and a donor either finds wearing glasses is
#: never given to a face without (docs/donors.md).
GLASSES_HEAD = "glasses_casia.npz"
#: The linear head that reads skin luma from the judges' embeddings, at any exposure
#: (:func:`skin_luma`, ``scripts/build_skin_head.py``).
SKIN_HEAD = "skin_luma.npz"
#: The softmax head that reads UTKFace's race code from the judges' embeddings
#: (:func:`groups`, ``scripts/build_group_head.py``): the metrics suite's ``group_match``.
GROUP_HEAD = "groups.npz"
#: A mouth open wider than its donor's (:func:`~fiftyone_faceanon.donors.mouth_opening`) would
#: stretch the donor's closed lips across it, drawn as streaks like fangs (a video track keeps
#: one donor while its mouth opens and closes: on the Hamilton clip the singer's donor has
#: closed lips, 0.006, over a mouth open 0.12-0.23). From ``MOUTH_FROM`` wider than the donor's
#: to ``MOUTH_FULL`` wider, the inside of the lips is blended over to the donor's *mouth donor*
#: (:meth:`Donor.mouth_donors`), warped onto the same landmarks.
MOUTH_FROM, MOUTH_FULL = 0.05, 0.1
#: A mouth donor's mouth is open at least ``WIDE_OPEN`` and shows teeth over at least
#: ``MOUTH_TEETH`` of the inside of its lips: of the 56 open that wide by their landmarks,
#: those without teeth were, by eye, mostly pouting or pressed lips whose landmarks are off,
#: which drew lips inside the mouth. Pale lips pass for teeth, so the inside must also be less
#: red than the lips (:func:`~fiftyone_faceanon.donors.mouth_redness`): that leaves out a
#: baby's pout and two closed smiles, which had put lips inside 40 donors' wide-open mouths
#: (26 mouth donors of the 759 donors).
WIDE_OPEN, MOUTH_TEETH = 0.2, 0.3
#: Landmarks of the inner lips, whose polygon is the inside of the mouth.
INNER_LIPS = slice(60, 68)
#: A mouth open without teeth showing (speech, a shout, an "O": 86 of the 555 faces the LFW
#: DevTest 500's verified run replaced, lips open 0.1 or more with ``teeth`` under 0.1) keeps
#: the inside of its own lips, blurred by :data:`CAVITY_BLUR` of the mouth's width, where it
#: will be verified: a donor's teeth there (or its mouth donor's, :data:`MOUTH_FROM`) turned
#: 60 of those 86 mouths into a toothy smile or a white blob. Not without verification: the
#: face's own open mouth makes it more like itself to the judges (FaceNet-CASIA found again
#: 14.7% of the faces instead of 13.6%; a flat fill of the cavity's colour, 14.5%), and
#: nothing redoes a try they would match (docs/benchmarks.md, "Open mouths keep their dark
#: inside"). The weight :meth:`Donor.cavity_weight` rises from 0 to 1 as the lips open from
#: ``OPEN_CAVITY[0]`` to ``OPEN_CAVITY[1]``, falls back to 0 as ``teeth`` (measured on the crop
#: at the target landmarks) rises from ``DARK_CAVITY[0]`` to ``DARK_CAVITY[1]``, and is 0 where
#: the inside is not less red than the lips by ``RED_CAVITY`` (closed lips that dlib parts,
#: faceapi's ``neutral`` with lipstick: :func:`~fiftyone_faceanon.donors.mouth_redness`), so a
#: video's mouth passes smoothly between its own cavity and the donor's teeth.
OPEN_CAVITY, DARK_CAVITY, RED_CAVITY, CAVITY_BLUR = (0.03, 0.08), (0.1, 0.3), 0.005, 0.04
#: Terms whose sign a donor's mirror image flips: its yaw, and which cheek its light is on. A
#: turned face that will be verified (its :class:`~fiftyone_faceanon.mesh.Mesh`) is read at its
#: mesh's yaw and drawn from a donor turned its way, mirrored where the donor is turned the
#: other (:meth:`Donor.mirrored`). Not without verification: as with ``shade``
#: (:data:`VERIFIED_ONLY`), a donor posed like the face is more like it to the judges, and
#: nothing redoes a try they would match (on the LFW DevTest 500's seven faces beyond 40°,
#: FaceNet-CASIA's similarity rose on five of them and it matched two more; docs/benchmarks.md,
#: "Turned faces get donors turned their way").
MIRRORED = ("yaw", "shade")


@lru_cache(maxsize=None)
def _head(name: str) -> dict[str, np.ndarray]:
    """The weight vectors ((D + 1,) each, the last the bias) of a shipped ``.npz`` of linear
    heads on judge embeddings, read once (checksum verified)."""
    from ..weights import model_path

    with np.load(model_path(name)) as heads:
        return {k: heads[k] for k in heads.files}


def linear_head(embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, D) embeddings and (D + 1,) weights, the last the bias -> (N,) ``[e, 1] . w``."""
    return np.hstack([embeddings, np.ones((len(embeddings), 1))]).astype(np.float64) @ weights


def logistic_head(embeddings: np.ndarray, weights: np.ndarray, temperature: float = 1.0
                  ) -> np.ndarray:
    """(N,) ``1 / (1 + exp(-T [e, 1] . w))``: a logistic head's probabilities at temperature
    ``T``."""
    return 1 / (1 + np.exp(-temperature * linear_head(embeddings, weights)))


def softmax_head(embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, D) embeddings and (C, D + 1) weights, the last column the biases -> (N, C) the
    softmax of ``[e, 1] . w_c`` over the C classes."""
    return softmax(linear_head(embeddings, weights.T), axis=1)


def demographic_features(embeddings: dict[str, np.ndarray]) -> np.ndarray:
    """``{judge: (N, D_j) unit embeddings}`` -> (N, 640): those of :data:`DEMOGRAPHIC_JUDGES`
    (FaceNet-CASIA 512, dlib 128) side by side, what the demographic heads read."""
    return np.hstack([np.asarray(embeddings[j], np.float32) for j in DEMOGRAPHIC_JUDGES])


def demographics(embeddings: dict[str, np.ndarray],
                 temperature: float = GENDER_TEMPERATURE) -> np.ndarray:
    """``{judge: (N, D_j) unit embeddings}`` of :data:`DEMOGRAPHIC_JUDGES` -> (N, 2):
    probability of female, ``sigmoid(temperature * logit)``, and log(1 + age), from the
    shipped linear heads."""
    heads = _head(DEMOGRAPHICS)
    x = demographic_features(embeddings)
    return np.stack([logistic_head(x, heads["gender"], temperature),
                     linear_head(x, heads["log_age"])], 1)


def seen_gender(female: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(M,) donors' P(female) by the head and (M,) the gender a person saw (0 male, 1
    female, -1 none; ``DonorBank.gender_seen``) -> (M,) P(female), at least :data:`SURE_DONOR`
    for a donor seen as a woman and at most ``1 - SURE_DONOR`` for one seen as a man (the head's
    own reading where it is surer): the gender rule and the ``female`` term then count a donor
    a person saw as sure, whatever the head read."""
    return np.where(seen == 1, np.maximum(female, SURE_DONOR),
                    np.where(seen == 0, np.minimum(female, 1 - SURE_DONOR), female))


def skin_luma(embeddings: dict[str, np.ndarray]) -> np.ndarray:
    """``{judge: (N, D_j) unit embeddings}`` of :data:`DEMOGRAPHIC_JUDGES` -> (N,) the skin
    luma (Y in [0, 1] over the ``skin`` zone, as ``donors.face_attributes`` measures it) that
    the shipped head reads in the embeddings: on the UTKFace 500 it moves about a tenth as much
    as the measured luma when the exposure changes (``SKIN_HEAD``'s manifest metrics)."""
    return linear_head(demographic_features(embeddings), _head(SKIN_HEAD)["luma"])


def groups(embeddings: dict[str, np.ndarray]) -> np.ndarray:
    """``{judge: (N, D_j) unit embeddings}`` of :data:`DEMOGRAPHIC_JUDGES` -> (N, 5) the
    probability of each of UTKFace's race codes (``donors.RACES``) by the shipped softmax head
    (:data:`GROUP_HEAD`)."""
    return softmax_head(demographic_features(embeddings), _head(GROUP_HEAD)["group"])


def other_group(face: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """(5,) a face's and (M, 5) donors' :func:`groups` -> (M,) bool: the donors read as a code
    at ``SURE_GROUP[0]`` or more that the face is read as under ``SURE_GROUP[1]`` and, for a
    face read as one code at ``FACE_GROUP`` or more, those whose likeliest code is another
    (the ``same_group`` rule of :meth:`Donor.cost`)."""
    donor_sure, face_unlike = SURE_GROUP
    out = (donors.max(1) >= donor_sure) & (face[donors.argmax(1)] < face_unlike)
    if face.max() >= FACE_GROUP:
        out |= donors.argmax(1) != face.argmax()
    return out


def skin_far(luma: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """(M,) donors' measured luma and skin-head luma minus the face's, each (M,) -> (M,) bool:
    darker than the face by more than :data:`SKIN_FAR` in both measures, or lighter by both
    (the rule of :meth:`Donor.cost`)."""
    far_luma, far_skin = SKIN_FAR
    return ((luma < -far_luma) & (skin < -far_skin)) | ((luma > far_luma) & (skin > far_skin))


def glasses(embeddings: np.ndarray) -> np.ndarray:
    """(N, 512) FaceNet-CASIA unit embeddings -> (N,) probability of glasses or sunglasses,
    from the shipped linear head."""
    return logistic_head(embeddings, _head(GLASSES_HEAD)["glasses"])


def keeps_frames(embeddings: np.ndarray) -> np.ndarray:
    """(N, 512) FaceNet-CASIA unit embeddings -> (N,) bool: faces that wear glasses by the head
    (:func:`glasses` at least :data:`KEEP_FRAMES`), whose own frames the pipeline keeps over the
    new face (``faces.frames_mask``), so they are matched as faces without glasses."""
    return glasses(embeddings) >= KEEP_FRAMES


def likeness(identity: dict[str, np.ndarray], bank: dict[str, np.ndarray]) -> np.ndarray:
    """``{judge: (D_j,) unit embedding}`` of one face and ``{judge: (M, D_j)}`` of M donors
    -> (M,) ``z(d) = max_j (s_j(d) - mean_d s_j) / std_d s_j``, each donor's cosine ``s_j(d)``
    to the face standardised over the donors, the largest over the judges: how much more like
    the face than the average donor a judge finds it (the scale of each judge's cosines and
    their offset for one face differ, hence per judge and per face)."""
    sims = [bank[j] @ e for j, e in identity.items()]
    return np.max([(s - s.mean()) / s.std() for s in sims], 0)


def glasses_line(measure: float, by_head: bool) -> float:
    """The glasses measure over which no donor is a candidate for a face whose ``glasses`` is
    ``measure``, read ``by_head`` (:func:`glasses`) or by the edge measure: :data:`GLASSES` for
    a face under :data:`NO_GLASSES`; by the head, just under :data:`SURE_GLASSES` for one under
    :data:`KEEP_FRAMES`; else none (infinite)."""
    if measure < NO_GLASSES:
        return GLASSES
    if by_head and measure < KEEP_FRAMES:
        return np.nextafter(SURE_GLASSES, -np.inf)
    return np.inf


def proportion(landmarks: np.ndarray) -> float:
    """Jaw width (points 0-16) over the chin-to-brow height of (68, 2) landmarks."""
    width = np.linalg.norm(landmarks[16] - landmarks[0])
    height = np.linalg.norm(landmarks[8] - landmarks[17:27].mean(0))
    return float(width / max(height, 1e-6))


@dataclass(frozen=True)
class Reading:
    """What :meth:`Donor.cost` reads off one face (:meth:`Donor.read`), once for all its
    tries: ``attributes`` its value of each term of :data:`TERMS` it has (as
    :func:`~fiftyone_faceanon.donors.face_attributes` gives them, with ``proportion`` and, with
    the judge embeddings, ``female``, ``log_age`` and ``skin``), ``glasses`` the donors' glasses
    measure over which none is a candidate (:func:`glasses_line`), ``usable`` (K,) bool the terms
    of the donor table it counts (not the
    :data:`DEMOGRAPHIC` ones without the judge embeddings, not :data:`VERIFIED_ONLY` without
    verification), ``expression`` fer's (7,) probabilities (None without verification),
    ``judged`` its judge embeddings ((D,) each) that the bank has too, ``gendered`` whether
    its gender and age were read, ``verified`` whether the judges will score it, ``facing``
    the yaw of a turned face's mesh (degrees, :func:`~fiftyone_faceanon.mesh.yaw`) where it will
    be verified, whose sign its donors are mirrored to (:meth:`Donor.mirrored`); 0 for any
    other face (:data:`MIRRORED`); ``group`` its (5,) :func:`groups` where the backend keeps
    each face's apparent group (``same_group``, :data:`SURE_GROUP`), else None."""

    attributes: dict[str, float]
    glasses: float
    usable: np.ndarray
    expression: np.ndarray | None
    judged: dict[str, np.ndarray]
    gendered: bool
    verified: bool
    facing: float = 0.0
    group: np.ndarray | None = None


@register("donor", "A synthetic person who does not exist, matched on pose, expression, skin "
                   "tone, proportions, beard and glasses, warped onto identity-neutral landmarks, "
                   "relit")
class Donor(Anonymizer):
    photometric = True
    crop_size = None
    forehead = 0.15
    renders_meshes = True

    def __init__(self, bank: str | Path | None = None, candidates: int = CANDIDATES,
                 same_group: bool = False):
        from ..donors import load_bank

        self.bank = load_bank(Path(bank) if bank else None)
        self.candidates = candidates
        attrs = {k: np.asarray(self.bank.attributes[k], np.float64)
                 for k in TERMS if k != "proportion" and k not in DEMOGRAPHIC}
        attrs["proportion"] = np.array([proportion(l) for l in self.bank.landmarks])
        attrs["female"], attrs["log_age"] = demographics(self.bank.embeddings).T
        attrs["female"] = seen_gender(attrs["female"], self.bank.gender_seen)
        attrs["skin"] = skin_luma(self.bank.embeddings)
        # (M, 5) the donors' groups where each face keeps its own (same_group), else None
        self.groups = groups(self.bank.embeddings) if same_group else None
        attrs["glasses"] = np.maximum(attrs["glasses"],
                                      glasses(self.bank.embeddings["facenet_casia"]))
        self.keys = list(TERMS)
        self.table = np.stack([attrs[k] for k in self.keys], 1)  # (M, K)
        self.weights = np.array([TERMS[k][0] for k in self.keys])
        self.scale = np.array([TERMS[k][1] for k in self.keys])
        # (K,) bool: the terms that need the face's embeddings, count early, need verification
        self.demographic, self.early, self.verified_only = (
            np.isin(self.keys, terms) for terms in (DEMOGRAPHIC, EARLY, VERIFIED_ONLY))
        size = self.bank.size
        self.src_points = [control_points(l.astype(np.float64), size) for l in self.bank.landmarks]
        self.triangles = Delaunay(control_points(self.bank.landmarks.mean(0), size)).simplices
        self.mouths = self.mouth_donors()
        self.lipstick = ((self.bank.attributes["lips"] >= LIPSTICK)
                         & (attrs["log_age"] >= np.log1p(LIPSTICK_AGE)))
        self.mirror_terms = np.isin(self.keys, MIRRORED)
        self._meshes: dict[tuple[int, bool], np.ndarray] = {}

    def read(self, crop: np.ndarray, landmarks: np.ndarray,
             identity: dict[str, np.ndarray] | None = None, verified: bool = True,
             mesh: Mesh | None = None) -> Reading:
        """What the matching cost reads off one (S, S, 3) crop with its (68, 2) landmarks, the
        same at each of its tries: :func:`~fiftyone_faceanon.donors.face_attributes` and the
        face's proportion; with ``identity`` (its judge embeddings, (D,) each, when the
        pipeline has them) its gender, age and skin luma by the heads on those of
        :data:`DEMOGRAPHIC_JUDGES`, and its glasses by FaceNet-CASIA's (:func:`glasses`; a
        face that wears them by it keeps its own frames and is read as one without,
        :data:`KEEP_FRAMES`); for a face that will be ``verified``, fer's reading of its
        expression (:data:`EXPRESSION`) and, but through the frames it keeps, its irises'
        ``eyes`` (:data:`EYES_FAR`; NaN otherwise). A turned face that will be verified is
        read at its ``mesh``'s yaw (dlib's points, kept near frontal, read the cameraman's 57°
        as -11°) and faces its donors' way (:data:`MIRRORED`)."""
        from ..donors import expressions, face_attributes

        identity = identity or {}
        by_head = "facenet_casia" in identity
        casia = identity["facenet_casia"][None] if by_head else None
        framed = by_head and bool(keeps_frames(casia)[0])
        # irises are read for the eye rule alone, which holds for verified faces, and not
        # through kept lenses (EYES_FAR)
        a = face_attributes(crop, landmarks, read_eyes=verified and not framed)
        a["proportion"] = proportion(landmarks)
        facing = yaw(mesh.points) if mesh is not None and verified else 0.0
        if facing:
            a["yaw"] = facing
        use = np.ones(len(self.keys), bool)
        if by_head:
            a["glasses"] = 0.0 if framed else float(glasses(casia)[0])
        gendered = all(j in identity for j in DEMOGRAPHIC_JUDGES)
        if gendered:
            embedded = {j: identity[j][None] for j in DEMOGRAPHIC_JUDGES}
            a["female"], a["log_age"] = demographics(embedded)[0]
            a["skin"] = float(skin_luma(embedded)[0])
            group = groups(embedded)[0] if self.groups is not None else None
        else:
            group = None
            use = ~self.demographic
        if not verified:
            use &= ~self.verified_only
        return Reading(a, glasses_line(a["glasses"], by_head), use,
                       expressions([crop], [landmarks])[0] if verified else None,
                       {j: e for j, e in identity.items() if j in self.bank.embeddings},
                       gendered, verified, facing, group)

    def cost(self, face: Reading, early: bool = True, last: bool = False, redo: bool = False
             ) -> np.ndarray:
        """(M,) matching cost of every donor for a face read by :meth:`read`: the weighted
        terms it can count, infinite for a donor with glasses on a face without
        (:func:`glasses_line`), a bearded one or one seen with
        facial hair on a face without (:data:`BEARDLESS`), one wearing lipstick on a face
        with pale lips (:data:`PALE_LIPS`) and, with the judge embeddings, for
        one sure to be of the other gender (:data:`SURE_FACE`) or, on a face that will be
        verified, under half its age (:data:`AGE_FLOOR`), on its ``early`` tries over
        twice its age (:data:`AGE_CEILING`) and, on its early tries or any but its ``last``,
        far from its skin tone by both measures (:data:`SKIN_FAR`), and where the backend keeps
        apparent groups (``same_group``), on those tries but a ``redo``'s, verified or not, for
        one of another apparent group (:data:`SURE_GROUP`); every judge's embedding
        adds to its donors' :func:`likeness` (:data:`LIKENESS`; :data:`LIKENESS_UNVERIFIED` for
        a face that will not be verified, which also leaves out :data:`VERIFIED_ONLY`).
        ``early``: whether the :data:`EARLY` terms count (:meth:`choose`); ``last``: the face's
        last try before it fails closed. A face that will
        be verified adds the :data:`EXPRESSION` term. A face with a ``facing`` is matched to
        each donor as it will be drawn, mirrored where it is turned the other way
        (:data:`MIRRORED`): its mesh's yaw against the donor's by dlib's points
        (:func:`~fiftyone_faceanon.donors.head_pose`), which read a donor's 28° as 15° by
        the mesh; beyond 40° the donors turned most its way are the nearest either way.
        """
        a = face.attributes
        use = face.usable if early else face.usable & ~self.early
        values = np.array([a.get(k, 0.0) for k in self.keys])
        table = self.table
        if face.facing:
            flip = self.mirrored(np.arange(len(table)), face.facing)
            table = np.where(flip[:, None] & self.mirror_terms, -table, table)
        terms = self.weights * ((table - values) / self.scale) ** 2
        cost = terms[:, use].sum(1)
        if face.expression is not None:
            w_e, sigma_e = EXPRESSION
            apart = ((self.bank.expression - face.expression) ** 2).sum(1)
            cost = cost + w_e * apart / sigma_e ** 2
        if face.judged:
            weight, offset = (LIKENESS, 0.0) if face.verified else LIKENESS_UNVERIFIED
            z = likeness(face.judged, self.bank.embeddings)
            cost = cost + weight * np.maximum(z + offset, 0) ** 2
        cost = rule_out(cost, self.column("glasses") > face.glasses)
        if a["beard"] < BEARDLESS:
            cost = rule_out(cost, (self.column("beard") >= BEARDED) | self.bank.facial_hair_seen)
        if a["lips"] < PALE_LIPS:
            cost = rule_out(cost, self.lipstick)
        if a["teeth"] >= SHOWS_TEETH:
            cost = rule_out(cost, (self.opening >= DARK_OPEN)
                            & (self.column("teeth") < DARK_TEETH))
        if face.gendered:
            female = self.column("female")
            if a["female"] >= SURE_FACE:
                cost = rule_out(cost, female <= 1 - SURE_DONOR)
            elif a["female"] <= 1 - SURE_FACE:
                cost = rule_out(cost, female >= SURE_DONOR)
            log_age = self.column("log_age")
            if face.verified:
                cost = rule_out(cost, log_age < a["log_age"] + np.log(AGE_FLOOR))
            if face.verified and early:
                cost = rule_out(cost, log_age > a["log_age"] + np.log(AGE_CEILING))
            if face.verified and (early or not last):
                cost = rule_out(cost, skin_far(self.column("luma") - a["luma"],
                                               self.column("skin") - a["skin"]))
            if face.group is not None and not redo and (early or not last):
                cost = rule_out(cost, other_group(face.group, self.groups))
        return cost

    def choose(self, face, rng, rank, exclude, redo=False, wide=False, last=False):
        """Excluded donors are never candidates, unless that leaves none (only with verification
        thresholds forced below every similarity): then the face's candidates are as
        without ``exclude``, and the verification that set it fails the face closed.
        Ranks from :data:`SKIN_TRIES` on order the donors without the :data:`EARLY` terms
        (a donor tried before may come again, with the stronger geometry and wider
        region), except for a ``redo``, which keeps them at every rank; a verified face's
        :data:`SKIN_FAR` rule holds at every rank but its ``last`` (a redo's last too). A
        ``wide`` try (its region reaches up the forehead) rules out the donors seen with
        hair or headwear over their forehead (the bank's ``fringe_seen``), unless no
        other is left: that hair would be drawn there as a dark band or wedge, often
        streaked by the fill beyond the donor's own region (:meth:`donor_face`). Not for
        a ``redo``, whose tries need the whole bank to keep one person's photos apart
        (asked there too, FaceNet-CASIA linked 0.79, 0.43 and 0.73% of the pairs of one
        person's photos of the LFW DevTest 500 at seeds 0-2, more than the 0.61-0.68% of
        the pairs of different people; not asked there, 0.18, 0.31 and 0.43%), nor at a
        face's ``last`` try, where a donor's fringe, which hides some of the forehead
        from the judges, is better than the face blurred away (docs/benchmarks.md, "A
        wide try gets a donor with a bare forehead"). At every try of a verified face but
        its ``last``, not a redo's, no donor's eyes are much lighter than the face's
        (:data:`EYES_FAR`) unless they are dark (:data:`EYES_DARK`)."""
        early = redo or rank < SKIN_TRIES
        cost = self.cost(face, early=early, last=last, redo=redo)
        if exclude is not None:
            cost = rule_out(cost, exclude)
        if wide and not redo and not last:
            cost = rule_out(cost, self.bank.fringe_seen)
        eyes = face.attributes["eyes"]
        if face.verified and not last and not redo and np.isfinite(eyes):
            cost = rule_out(cost, self.bank.attributes["eyes"] > max(eyes + EYES_FAR, EYES_DARK))
        order = np.argsort(cost, kind="stable")
        order = order[np.isfinite(cost[order])]
        head = order[: self.candidates]
        order = np.concatenate([head[rng.permutation(len(head))], order[self.candidates:]])
        return int(order[rank % len(order)])

    def facing(self, face: Reading | None) -> float:
        return 0.0 if face is None else face.facing

    def mirrored(self, donor: int | np.ndarray, facing: float) -> bool | np.ndarray:
        """Whether a ``donor`` (or (M,) donors) is drawn mirrored onto a turned face whose
        donors face ``facing`` (degrees, :func:`~fiftyone_faceanon.mesh.yaw`; the sign is
        :func:`~fiftyone_faceanon.donors.head_pose`'s): where it is turned the other way, so
        that the side of the face the photo shows, stretched over the near cheek, is the side
        the donor's photo shows best. The judges' embeddings of a donor stand for its mirror
        image (in the cost's :func:`likeness` and the donors kept from a face); the result is
        judged as drawn."""
        return self.column("yaw")[donor] * facing < 0

    def column(self, key: str) -> np.ndarray:
        """(M,) every donor's value of the term ``key`` (:data:`TERMS`), as the cost reads it."""
        return self.table[:, self.keys.index(key)]

    @property
    def opening(self) -> np.ndarray:
        """(M,) each donor's mouth opening (:func:`~fiftyone_faceanon.donors.mouth_opening`)."""
        return self.column("mouth_open")

    def mouth_donors(self) -> np.ndarray | None:
        """(M,) each donor's mouth donor: of the other donors whose mouth is open
        :data:`WIDE_OPEN` or more with teeth (:data:`MOUTH_TEETH`) and whose inside of the lips
        is less red than the lips (:func:`~fiftyone_faceanon.donors.mouth_redness` < 0), the
        nearest in skin colour (Cb, Cr and luma, each over its :data:`TERMS` tolerance), so the
        inside of a wide-open mouth matches the lips around it. One per donor, so a video
        track's mouth keeps its teeth from frame to frame. None for a bank without such a donor
        (a user's own bank of closed mouths): mouths are then warped from the donor alone."""
        from ..donors import mouth_redness

        colour = [self.keys.index(k) for k in ("cb", "cr", "luma")]
        tone = self.table[:, colour] / self.scale[colour]
        teeth = self.column("teeth")
        wide = np.array([d for d in np.flatnonzero((self.opening >= WIDE_OPEN)
                                                   & (teeth >= MOUTH_TEETH))
                         if mouth_redness(self.bank.image(d), self.bank.landmarks[d]) < 0], int)
        if len(wide) == 0:
            return None
        distance = ((tone[:, None] - tone[wide][None]) ** 2).sum(-1)
        distance[wide, np.arange(len(wide))] = np.inf
        return wide[np.argmin(distance, 1)]

    def mouth_weight(self, landmarks: np.ndarray, donor: int) -> float:
        """How much of the inside of the mouth of a face at (68, 2) ``landmarks`` comes from
        ``donor``'s mouth donor: 0 up to :data:`MOUTH_FROM` wider open than the donor, 1 from
        :data:`MOUTH_FULL` wider, linear between; 0 when the bank has no mouth donors."""
        from ..donors import mouth_opening

        if self.mouths is None:
            return 0.0
        wider = mouth_opening(landmarks) - self.opening[donor]
        return float(np.clip((wider - MOUTH_FROM) / (MOUTH_FULL - MOUTH_FROM), 0.0, 1.0))

    def donor_landmarks(self, donor: int) -> np.ndarray:
        return self.bank.landmarks[donor].astype(np.float64)

    def donor_id(self, donor: int) -> str:
        return str(self.bank.ids[donor])

    def anonymize(self, crops, landmarks, regions, rngs, donors=None, meshes=None):
        """Each donor crop warped onto the face (:meth:`warped`; a verified face's open mouth
        without teeth keeps its inside, :meth:`own_cavity`) or drawn through a turned face's
        mesh (:meth:`through_mesh`), brightness-matched over the region and set into the
        original crop: (N, S, S, 3) uint8. A region that reaches beyond the face's hull with
        the backend's :attr:`forehead` (a wide try's, ``pipeline.WIDEN_FROM``) is drawn from
        the donor's face with its skin extended beyond its own such region
        (:meth:`donor_face`): there the donor's photo shows its hair, a hat brim or its
        background, which set into a bald or bare forehead looked like a dark band or blob."""
        from ..faces import face_region, feathered_mask

        out = []
        meshes = meshes or [None] * len(crops)
        for crop, lms, region, d, mesh in zip(crops, landmarks, regions, donors, meshes):
            sel = region > 0
            if mesh is None:
                own = face_region(lms, crop.shape[0], self.forehead) > 0
                warped = self.warped(lms, d, crop.shape[0], wide=bool((sel & ~own).any()))
            else:
                warped = self.through_mesh(crop, mesh, d)
            warped = self.brightness_matched(crop, warped, sel)
            if mesh is None and self.verified:
                warped = self.own_cavity(crop, lms, warped)
            soft = feathered_mask(region)[..., None]
            out.append(np.rint(warped * soft + crop * (1 - soft)).astype(np.uint8))
        return np.stack(out)

    @staticmethod
    def brightness_matched(crop: np.ndarray, drawn: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """The (S, S, 3) ``drawn`` donor scaled to the mean brightness of the (S, S, 3) uint8
        ``crop`` over the (S, S) bool ``sel``, clipped to [0, 255] (float)."""
        gain = crop[sel].mean() / max(float(drawn[sel].mean()), 1.0)
        return np.clip(drawn.astype(np.float32) * gain, 0, 255)

    def warped(self, lms: np.ndarray, donor: int, size: int, wide: bool = False
               ) -> np.ndarray:
        """The donor's (S, S, 3) uint8 crop (``wide``: its :meth:`donor_face` filled beyond its
        own region) warped so its 86 control points land on the face's ((68, 2) crop-px
        ``lms``), the inside of a mouth opened wider than the donor's taken from its mouth
        donor (:meth:`mouth_weight`)."""
        points = control_points(lms, size)
        image = self.donor_face(donor, beyond=True) if wide else self.bank.image(donor)
        warped = piecewise_affine_warp(image, self.src_points[donor], points, self.triangles,
                                       size)
        weight = self.mouth_weight(lms, donor)
        if weight > 0:
            m = self.mouths[donor]
            inside = piecewise_affine_warp(self.bank.image(m), self.src_points[m], points,
                                           self.triangles, size)
            cavity = weight * _inside_of_mouth(lms, size)[..., None]
            warped = np.rint(inside * cavity + warped * (1 - cavity)).astype(np.uint8)
        return warped

    @staticmethod
    def cavity_weight(crop: np.ndarray, landmarks: np.ndarray) -> float:
        """How much of the inside of the lips an (S, S, 3) crop keeps of its own at (68, 2)
        crop-px target ``landmarks`` (:data:`OPEN_CAVITY`, :data:`DARK_CAVITY`,
        :data:`RED_CAVITY`): 0 for closed lips or teeth showing, 1 for a mouth open without
        teeth."""
        from ..donors import mouth_inside, mouth_opening

        opened = np.clip((mouth_opening(landmarks) - OPEN_CAVITY[0])
                         / (OPEN_CAVITY[1] - OPEN_CAVITY[0]), 0.0, 1.0)
        if opened == 0:
            return 0.0
        teeth, redness = mouth_inside(crop, landmarks)
        dark = (DARK_CAVITY[1] - teeth) / (DARK_CAVITY[1] - DARK_CAVITY[0])
        inside = -redness / RED_CAVITY
        return float(opened * np.clip(dark, 0.0, 1.0) * np.clip(inside, 0.0, 1.0))

    def own_cavity(self, crop: np.ndarray, lms: np.ndarray, warped: np.ndarray) -> np.ndarray:
        """The (S, S, 3) float ``warped`` donor (brightness-matched) with the inside of the lips
        at (68, 2) crop-px target ``lms`` blended over to the face's own (S, S, 3) uint8
        ``crop`` there, blurred by :data:`CAVITY_BLUR` of the mouth's width, at
        :meth:`cavity_weight`: a mouth open without teeth stays a dark cavity, whatever the
        donor's mouth shows (:meth:`anonymize`, for a face that will be :attr:`verified`)."""
        weight = self.cavity_weight(crop, lms)
        if weight == 0:
            return warped
        sigma = CAVITY_BLUR * float(np.linalg.norm(lms[54] - lms[48]))
        own = cv2.GaussianBlur(crop, (0, 0), max(sigma, 0.5))
        cavity = weight * _inside_of_mouth(lms, crop.shape[0])[..., None]
        return own * cavity + warped * (1 - cavity)

    def through_mesh(self, crop: np.ndarray, mesh: Mesh, donor: int) -> np.ndarray:
        """A turned face's (S, S, 3) ``crop`` with the donor (:meth:`donor_face`, mirrored where
        it is turned against ``mesh.facing``, :meth:`mirrored`) drawn onto the face's
        :class:`~fiftyone_faceanon.mesh.Mesh` from its own (:meth:`donor_mesh`,
        :func:`~..mesh.render`)."""
        face = self.donor_face(donor)
        if self.mirrored(donor, mesh.facing):
            face = np.ascontiguousarray(face[:, ::-1])
        drawn, covered = render(face, self.donor_mesh(donor, mesh.facing)[:, :2], mesh,
                                crop.shape[0])
        return np.where(covered[..., None], drawn, crop)

    def donor_face(self, donor: int, beyond: bool = False) -> np.ndarray:
        """The donor's (S, S, 3) uint8 crop with what is not its skin (:func:`~..faces.not_skin`:
        hair over its cheeks and temples, the background beyond its outline; grown by 2 px, so
        no hair-coloured edge is left to fill from) outside its features (:data:`SKIN_INNER`)
        filled from its skin around (``cv2.inpaint``): a turned face's near cheek is the
        donor's cheek stretched, across which its hair or background would show. ``beyond``:
        all that lies beyond its face's hull with the backend's :attr:`forehead` too (hair the
        skin test takes for skin, a hat brim), for a wide region (:meth:`anonymize`), which
        reaches past the donor's forehead and outline; that larger fill is made at half the
        crop's side (15 ms a donor on one core, 40 at its own), where it is as smooth."""
        from ..faces import face_region, not_skin, polygon_mask

        lms = self.bank.landmarks[donor].astype(np.float64)
        image = self.bank.image(donor)
        size = image.shape[0]
        inner = polygon_mask(lms[SKIN_INNER], size,
                             int(SKIN_FEATURES * np.linalg.norm(lms[36] - lms[45])))
        hole = cv2.dilate(not_skin(image, lms).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if not beyond:
            return cv2.inpaint(image, (hole & ~inner).astype(np.uint8), 3, cv2.INPAINT_TELEA)
        hole = (hole | (face_region(lms, size, self.forehead) == 0)) & ~inner
        half = size // 2
        covered = cv2.resize(hole.astype(np.float32), (half, half),
                             interpolation=cv2.INTER_AREA) > 0  # a pixel with any hole in it
        small = cv2.inpaint(cv2.resize(image, (half, half), interpolation=cv2.INTER_AREA),
                            covered.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        fill = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
        return np.where(hole[..., None], fill, image)

    def donor_mesh(self, donor: int, facing: float = 0.0) -> np.ndarray:
        """(468, 3) the donor's mesh points in its crop's pixels (:func:`~..mesh.face_mesh`
        about the box of its 68 landmarks), those of its mirror image where it is drawn
        mirrored onto a face whose donors face ``facing`` (:meth:`mirrored`), found once per
        donor and side."""
        flip = bool(self.mirrored(donor, facing))
        if (donor, flip) not in self._meshes:
            image, lms = self.bank.image(donor), self.bank.landmarks[donor].astype(np.float64)
            if flip:
                image = np.ascontiguousarray(image[:, ::-1])
                lms = np.c_[image.shape[1] - 1 - lms[:, 0], lms[:, 1]]
            self._meshes[donor, flip] = face_mesh(image, np.r_[lms.min(0), lms.max(0)])
        return self._meshes[donor, flip]


def rule_out(cost: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(M,) ``cost`` with the donors where ``out`` ((M,) bool) is set made infinite, unless that
    leaves no donor of finite cost: then ``cost`` unchanged (a rule never leaves a face without a
    candidate)."""
    kept = np.where(out, np.inf, cost)
    return kept if np.isfinite(kept).any() else cost


def _inside_of_mouth(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32 mask of the inner lips' polygon (:data:`INNER_LIPS`) of (68, 2) crop-px
    landmarks, its edge softened over about a pixel."""
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(landmarks[INNER_LIPS] * 16).astype(np.int32)], 1.0,
                 cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(mask, (0, 0), 0.7)
