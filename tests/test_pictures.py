"""One real | generated layout for make generate and the evaluation's sample videos."""

import numpy as np
import torch

from lightning_ssmvid.pictures import side_by_side_video, to_image, with_border


def test_side_by_side_video_frames_the_context_and_puts_generated_on_the_right():
    real, generated = torch.zeros(1, 6, 3, 16, 16), torch.ones(1, 4, 3, 16, 16)
    video = side_by_side_video(real, generated, context=2)
    assert video.shape == (6, 16, 32, 3) and video.dtype == np.uint8
    assert (video[0, 0, :, 0] == 255).all() and (video[0, 0, :, 1:] == 0).all()  # context: red frame, both halves
    assert (video[2:, :, :16] == 0).all() and (video[2:, :, 16:] == 255).all()  # then real | generated
    np.testing.assert_array_equal(video[1, :, 16:], with_border(to_image(real[0, 1])))
