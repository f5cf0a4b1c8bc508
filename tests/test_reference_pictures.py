"""Reference pictures read by their subject (``backend.reference_pictures``): concept art on a plain page, a photo on
a busy background, swatches left alone."""

import numpy as np

from backend.conditioning import reference_tensor
from backend.reference_pictures import reference_subject, subject_colour, subject_mask

RED = np.array([200, 30, 40], np.uint8)


def disc(size: int, radius: float, centre=None) -> np.ndarray:
    cy, cx = centre or (size / 2, size / 2)
    yy, xx = np.mgrid[:size, :size] + 0.5
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2


def picture(background: np.ndarray, subject: np.ndarray, colour=RED) -> np.ndarray:
    image = background.copy()
    image[subject] = colour
    return image


def stripes(size: int) -> np.ndarray:
    """A busy background that runs off every edge: green and blue diagonal stripes."""
    yy, xx = np.mgrid[:size, :size]
    band = ((yy + xx) // 6) % 2 == 0
    return np.where(band[..., None], np.array([40, 160, 60], np.uint8), np.array([50, 80, 200], np.uint8))


def test_a_small_subject_on_a_plain_page_becomes_most_of_the_reference():
    page = np.full((120, 90, 3), 235, np.uint8)
    image = picture(page, disc(120, 14)[:, 15:105])
    assert np.abs(image.reshape(-1, 3).mean(0) - RED).max() > 150  # by its pixels the picture is a white page
    keyed = reference_subject(image)
    assert keyed.dtype == np.uint8 and keyed.ndim == 3 and abs(keyed.shape[0] - keyed.shape[1]) <= 2
    assert keyed.shape[0] < 45  # cropped around the disc (28 px across)
    assert np.abs(keyed.reshape(-1, 3).mean(0) - RED).max() < 12  # and read as red
    encoded = (reference_tensor(image) + 1) * 127.5
    assert np.abs(encoded.mean((1, 2)).numpy() - RED).max() < 12


def test_a_subject_on_a_busy_background_is_found_by_the_backgrounds_colours():
    image = picture(stripes(96), disc(96, 18, centre=(52, 44)))
    mask = subject_mask(image / 255.0)
    assert mask is not None
    truth = disc(96, 18, centre=(52, 44))
    assert (mask & truth).sum() / truth.sum() > 0.95 and (mask & ~truth).sum() / truth.sum() < 0.1
    assert np.abs(reference_subject(image).reshape(-1, 3).mean(0) - RED).max() < 12


def test_holes_inside_the_subject_are_its_own():
    """A white shirt on a white page: the part of the subject that has the page's colour stays the subject's."""
    page = np.full((96, 96, 3), 240, np.uint8)
    ring = disc(96, 26) & ~disc(96, 10)
    image = picture(page, ring)
    mask = subject_mask(image / 255.0)
    assert mask is not None and mask[disc(96, 9)].all()
    assert not mask[~disc(96, 28)].any()


def test_swatches_and_pictures_without_a_clear_subject_are_left_as_they_are():
    yy, xx = np.mgrid[:64, :64]
    checker = np.where((((yy // 8) + (xx // 8)) % 2 == 0)[..., None], RED, np.array([20, 20, 160], np.uint8))
    gradient = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)], -1).astype(np.uint8)
    plain = np.full((64, 64, 3), 90, np.uint8)
    full_frame = picture(np.full((64, 64, 3), 250, np.uint8), disc(64, 40))  # the subject fills the frame
    for image in (checker, gradient, plain, full_frame, stripes(64), np.zeros((6, 6, 3), np.uint8)):
        assert reference_subject(image) is image


def test_a_large_picture_is_keyed_at_a_small_size():
    image = picture(np.full((1200, 1600, 3), 30, np.uint8), disc(1600, 200, centre=(620, 790))[:1200])
    keyed = reference_subject(image)
    assert max(keyed.shape[:2]) <= 128
    assert np.abs(keyed.reshape(-1, 3).mean(0) - RED).max() < 12


def test_subject_colour_is_the_subjects_mean_for_a_picture_and_the_whole_mean_for_a_swatch():
    image = picture(stripes(96), disc(96, 18, centre=(52, 44)))
    colour, is_picture = subject_colour(image)
    assert is_picture and np.abs(colour * 255 - RED).max() < 6  # the stripes (46% green) are left out
    yy, xx = np.mgrid[:64, :64]
    checker = np.where((((yy // 8) + (xx // 8)) % 2 == 0)[..., None], RED, np.array([20, 20, 160], np.uint8))
    colour, is_picture = subject_colour(checker)
    assert not is_picture
    np.testing.assert_allclose(colour * 255, (RED + np.array([20, 20, 160])) / 2, atol=0.5)


def test_pattern_elements_that_miss_the_border_are_background_behind_the_subject_too():
    """Blue tiles on a green page, none touching the border; the red disc stands on the middle one. The tiles apart
    from the disc teach their colour, so the one behind it is left out of the subject as well."""
    image = np.full((96, 96, 3), (60, 140, 100), np.uint8)
    tiles = np.zeros((96, 96), bool)
    for y in (12, 40, 68):
        for x in (12, 40, 68):
            tiles[y:y + 16, x:x + 16] = True
    image[tiles] = (90, 160, 230)
    subject = disc(96, 12, centre=(56, 48))
    image[subject] = RED
    mask = subject_mask(image / 255.0)
    assert mask is not None and (mask & subject).sum() / subject.sum() > 0.95
    assert (mask & tiles & ~subject).sum() < 0.02 * subject.sum()
    colour, is_picture = subject_colour(image)
    assert is_picture and np.abs(colour * 255 - RED).max() < 6
