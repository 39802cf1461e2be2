"""kanjian.training: datasets, offline Ultralytics training, ONNX export, gates, bundles.

Engineers' machines only (the ``training`` extra): the station never imports it.

- :mod:`.importer` — ``kanjian dataset import``: VOC / COCO / YOLO -> one YOLO dataset
  (readers :mod:`.voc`, :mod:`.coco`, :mod:`.yolo_source`; writer :mod:`.layout`).
- :mod:`.anomaly_data` — ``kanjian dataset import --task anomaly``: good/ + defect/<kind>/
  with binary masks and a train/calibration/validation split (reader :mod:`.anomaly_source`).
- :mod:`.anomaly_draem`, :mod:`.anomaly_draem_fit` — DRAEM-S, an anomaly model trained from
  scratch on good images (:mod:`.anomaly_images`) with synthetic defects
  (:mod:`.anomaly_synth`); AUROC in :mod:`.anomaly_metrics`.
- :mod:`.station_export` — ``kanjian dataset export``: the station's log -> YOLO dataset
  (filters :mod:`.export_filter`, log reader :mod:`.station_log`, class lists
  :mod:`.export_classes`, pre-annotations for :mod:`.label_studio`).
- :mod:`.train`, :mod:`.export` — Ultralytics training and ONNX export, offline (:mod:`._env`).
- :mod:`.gates` — parity (ONNX in kanjian.inference vs PyTorch in Ultralytics), accuracy.
- :mod:`.package` — bundle writing: model.onnx, manifest.json, golden set.
- :mod:`.pipeline` — ``kanjian train``: all of the above in order; ``kanjian.appliance_api.cli.training`` wires the commands.

Importing this package is cheap: torch and Ultralytics load inside the functions.
"""
