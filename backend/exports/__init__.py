"""Editorial and pipeline exports of a storyboard: OTIO timeline and CMX 3600 EDL (``timeline``), cameras as FBX and
USD (``cameras``), a storyboard PDF (``storyboard_pdf``) and a shot list CSV (``shot_list``); ``board`` reads a
board out of a .blend and writes them all (``cinepregen export``)."""
