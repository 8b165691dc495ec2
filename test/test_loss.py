"""Images lost in transport (bisenet_ros/ros/loss.py): the four signs and what they ignore."""
from __future__ import annotations

import random

from bisenet_ros.ros.loss import LossMonitor, loss_message

PERIOD = 100_000_000  # 10 Hz camera, ns
T0 = 1_700_000_000 * 10**9


def feed(monitor: LossMonitor, frames: range, arrives, info: bool = True, jitter: int = 0) -> None:
    """Frames ``frames`` of a 10 Hz camera; ``arrives(i)`` says whether frame i's image arrives;
    stamps jitter uniformly by +-``jitter`` ns."""
    rng = random.Random(0)
    for i in frames:
        stamp = T0 + i * PERIOD + rng.randint(-jitter, jitter)
        if info:
            monitor.on_camera_info(stamp, now=i * 0.1)
        if arrives(i):
            monitor.on_image(stamp)


def test_healthy_camera_no_loss_even_with_jitter_and_node_side_skipping():
    m = LossMonitor()
    feed(m, range(100), lambda i: True, jitter=20_000_000)  # +-20 ms jitter on a 100 ms period
    report = m.evaluate(now=100 * 0.1 + 3)
    assert report.lost == 0 and not report.warn and report.received == 100


def test_camera_info_without_images_counts_each_missing_frame():
    m = LossMonitor()
    feed(m, range(100), lambda i: i % 10 == 0)  # 10 of 100 images arrive (as with the 720p camera)
    report = m.evaluate(now=13.0)
    assert report.lost == 90 and report.warn and "camera_info" in report.sources
    assert m.total_lost == 90


def test_stamp_gaps_without_camera_info():
    m = LossMonitor()
    feed(m, range(40), lambda i: True, info=False)
    feed(m, range(40, 100), lambda i: i % 3 == 0, info=False)  # then 2 of 3 lost
    report = m.evaluate(now=20.0)
    assert 36 <= report.lost <= 40 and "stamps" in report.sources and report.warn


def test_middleware_count_is_not_added_to_the_other_signs():
    m = LossMonitor()
    feed(m, range(50), lambda i: i % 2 == 0)
    m.on_middleware_lost(25)
    report = m.evaluate(now=10.0)
    assert report.lost == 25 and set(report.sources) >= {"camera_info", "middleware"}


def test_a_sign_seeing_the_same_loss_a_period_later_is_not_counted_twice():
    m = LossMonitor()
    feed(m, range(30), lambda i: i not in (10, 11, 12))
    assert m.evaluate(now=10.0).total_lost == 3  # camera_info saw them
    m.on_middleware_lost(3)  # the middleware reports the same three a period later
    assert m.evaluate(now=11.0).total_lost == 3


def test_images_that_never_arrive_warn_only_after_a_few_periods():
    m = LossMonitor()
    for second in range(2):  # start-up: CameraInfo flows, the image subscription has not matched
        feed(m, range(second * 10, second * 10 + 10), lambda i: False)
        assert m.evaluate(now=second + 3.0).lost == 0
    feed(m, range(20, 30), lambda i: False)
    assert m.evaluate(now=6.0).lost == 30  # the third silent period: all of them count
    feed(m, range(30, 40), lambda i: False)
    assert m.evaluate(now=7.0).total_lost == 40  # and every period after
    # an image after start-up silence means they were only late to match: nothing counted
    m2 = LossMonitor()
    feed(m2, range(0, 10), lambda i: False)
    m2.evaluate(now=3.0)
    feed(m2, range(10, 20), lambda i: True)
    assert m2.evaluate(now=5.0).lost == 0


def test_unpaired_stamps_give_no_camera_info_verdict():
    m = LossMonitor()
    for i in range(50):  # a driver whose CameraInfo carries other stamps than its images
        m.on_camera_info(T0 + i * PERIOD + 1, now=i * 0.1)
        m.on_image(T0 + i * PERIOD)
    assert m.evaluate(now=10.0).lost == 0


def test_resubscribing_forgets_what_was_in_flight():
    m = LossMonitor()
    feed(m, range(20), lambda i: True)
    feed(m, range(20, 23), lambda i: False)
    m.forget_pending()
    feed(m, range(23, 40), lambda i: True)
    assert m.evaluate(now=10.0).lost == 0


def test_a_new_camera_forgets_only_camera_info_from_before_its_image_path_matched():
    """The lossy stream of test_graph: paired frames, then a camera whose images never arrive.
    Its CameraInfo from before the image writer matched is not judged; what came after is, and a
    publisher that left (an older matching) leaves its last CameraInfo to be judged."""
    m = LossMonitor()
    feed(m, range(20), lambda i: True)  # paired: t 0.0 .. 1.9
    m.evaluate(now=3.95)  # (the diagnostics timer's evaluation finds them paired)
    feed(m, range(20, 25), lambda i: False)  # CameraInfo ahead of the image writer's matching (t 2.4)
    m.forget_pending(arrived_before=2.45)
    feed(m, range(25, 85), lambda i: False)  # then 60 frames whose images are all lost
    m.forget_pending(arrived_before=2.45)  # the camera left: its last matching was at 2.45
    assert m.evaluate(now=20.0).lost == 60
    m.forget_pending()  # re-created subscriptions: everything in flight is forgotten
    feed(m, range(85, 90), lambda i: False)
    m.forget_pending()
    m.evaluate(now=30.0)
    assert m.total_lost == 60


def test_messages_name_cause_and_fix():
    m = LossMonitor()
    feed(m, range(50), lambda i: i % 4 == 0)
    report = m.evaluate(now=10.0)
    text = loss_message("image", report, "best_effort", ["best_effort"])
    assert "of 50 images lost in transport" in text and "reliable" in text and "LARGE_DATA" in text
    assert "input_reliability to auto" in loss_message("image", report, "best_effort", ["reliable"])
    assert "net.core.rmem_max" in loss_message("image", report, "reliable", ["reliable"])


def test_a_camera_that_pauses_or_restarts_is_not_losing_frames():
    m = LossMonitor()
    feed(m, range(20), lambda i: True, info=False)
    feed(m, range(100, 120), lambda i: True, info=False)  # 8 s later the stream goes on
    assert m.evaluate(now=20.0).lost == 0


def test_sequence_numbers_count_a_burst_exactly_and_stamp_jitter_not_at_all():
    """A burst overwriting the keep-last queue: stamps close together (no gap), the publisher's
    numbers jump: each missing number is one frame. Stamps that jitter past 1.5 periods would
    count under the stamp sign; with sequence numbers they stand down."""
    m = LossMonitor()
    for i in range(200):  # 200 frames in 20 ms, every 40th reaches the callback
        if i % 40 == 0:
            m.on_image(T0 + i * 100_000, sequence=i + 1)
    report = m.evaluate(now=1.0)
    assert report.lost == 156 and report.sources == ("sequence",)  # 1, 41, ... 161: 161 sent, 5 seen
    m = LossMonitor()
    rng = random.Random(1)
    for i in range(100):  # every frame arrives, stamps jitter by up to 0.8 periods
        m.on_image(T0 + i * PERIOD + rng.randint(0, 8 * PERIOD // 10), sequence=i + 1)
    assert m.evaluate(now=11.0).lost == 0


def test_sequence_restart_or_unknown_publisher_is_no_loss():
    m = LossMonitor()
    for seq in (500, 501, 502):
        m.on_image(T0 + seq * PERIOD, sequence=seq)
    m.on_image(T0 + 503 * PERIOD, sequence=1)  # the driver restarted: its numbers begin again
    m.on_image(T0 + 504 * PERIOD, sequence=2)
    m.on_image(T0 + 505 * PERIOD, sequence=None)  # a second publisher came: numbers not trusted
    m.on_image(T0 + 506 * PERIOD, sequence=90)  # back to one: no gap from the old number
    m.on_image(T0 + 507 * PERIOD, sequence=93)  # 91 and 92 lost
    assert m.evaluate(now=51.0).lost == 2
    m.forget_pending()  # resubscribed: what was in flight is not the camera's loss
    m.on_image(T0 + 508 * PERIOD, sequence=120)
    m.evaluate(now=52.0)
    assert m.total_lost == 2


def test_stamps_judge_again_while_sequence_numbers_are_not_trusted():
    """A second publisher matched (numbers interleave, so none are passed): the stamp sign counts
    the gaps again, as it does for a middleware without sequence numbers."""
    m = LossMonitor()
    for i in range(20):
        m.on_image(T0 + i * PERIOD, sequence=i + 1)
    for i in range(20, 60):  # every other frame arrives, numbers unknown
        if i % 2 == 0:
            m.on_image(T0 + i * PERIOD, sequence=None)
    assert m.evaluate(now=7.0).lost == 19  # 20, 22, ... 58 arrive: 19 gaps of one frame each
