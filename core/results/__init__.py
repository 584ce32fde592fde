"""What a trained run answers: prediction, Grad-CAM, the report, charts."""
