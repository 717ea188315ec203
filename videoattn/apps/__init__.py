"""Using a trained model: feature extraction (:mod:`.extract`), prediction with a timeline
(:mod:`.predict`, :mod:`.timeline`), labelled videos (:mod:`.render`) and attention pictures
(:mod:`.visualize`)."""
