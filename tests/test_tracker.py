"""realtime.tracker: stable IDs, smoothing, and when a track is (re-)classified."""

from __future__ import annotations

from realtime.tracker import CachePolicy, Tracker, iou


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_ids_stay_stable_while_faces_move() -> None:
    tracker = Tracker()
    a, b = (10, 10, 50, 50), (200, 40, 60, 60)
    first = tracker.update([a, b], [0.9, 0.8], 0.0)
    ids = [t.track_id for t in first]
    assert len(set(ids)) == 2
    for step in range(1, 20):  # both drift 3 px a frame; detection order swaps every frame
        a2 = (a[0] + 3 * step, a[1], 50, 50)
        b2 = (b[0] - 3 * step, b[1] + step, 60, 60)
        boxes = [a2, b2] if step % 2 else [b2, a2]
        tracks = tracker.update(boxes, [0.9, 0.9], step / 30)
        got = {t.box: t.track_id for t in tracks}
        assert got[a2] == ids[0] and got[b2] == ids[1]


def test_new_face_gets_new_id_and_lost_tracks_expire() -> None:
    tracker = Tracker(max_misses=2)
    (t1,) = tracker.update([(0, 0, 40, 40)], [0.9], 0.0)
    (t2,) = tracker.update([(300, 300, 40, 40)], [0.9], 0.1)  # far away: a different face
    assert t2.track_id != t1.track_id
    for k in range(3):
        tracker.update([(300, 300, 40, 40)], [0.9], 0.2 + k)
    assert t1.track_id not in tracker.tracks and t2.track_id in tracker.tracks


def test_short_gap_keeps_the_id() -> None:
    tracker = Tracker(max_misses=5)
    (t1,) = tracker.update([(0, 0, 40, 40)], [0.9], 0.0)
    tracker.update([], [], 0.1)
    tracker.update([], [], 0.2)
    (again,) = tracker.update([(2, 1, 40, 40)], [0.9], 0.3)
    assert again.track_id == t1.track_id


def test_probability_is_smoothed_over_the_track() -> None:
    tracker = Tracker(ema_alpha=0.5)
    (t,) = tracker.update([(0, 0, 40, 40)], [0.9], 0.0)
    tracker.add_result(t.track_id, {"p_female": 0.9}, 0.0)
    tracker.add_result(t.track_id, {"p_female": 0.1}, 0.1)  # one outlier does not flip a confident face
    assert abs(t.p_female - 0.5) < 1e-9
    tracker.add_result(t.track_id, {"p_female": 0.9}, 0.2)
    assert t.p_female > 0.5 and t.n_results == 3
    assert tracker.add_result(999, {"p_female": 0.5}, 0.0) is None  # a result for a track that is gone


def test_cache_policy_new_grown_stale_pending() -> None:
    policy = CachePolicy(max_age_s=1.0, grow_ratio=1.5)
    tracker = Tracker()
    (t,) = tracker.update([(0, 0, 40, 40)], [0.9], 0.0)
    assert policy.needs(t, 0.0)  # new
    tracker.add_result(t.track_id, {"p_female": 0.8}, 0.0)
    assert not policy.needs(t, 0.5)  # cached
    tracker.update([(0, 0, 44, 44)], [0.9], 0.6)
    assert not policy.needs(t, 0.6)  # grew a little
    tracker.update([(0, 0, 52, 52)], [0.9], 0.7)
    assert policy.needs(t, 0.7)  # grew by > 1.5x in area
    tracker.add_result(t.track_id, {"p_female": 0.8}, 0.7)
    assert policy.needs(t, 1.8)  # stale
    t.pending = True
    assert not policy.needs(t, 5.0)  # already in flight
    assert CachePolicy(every_frame=True).needs(tracker.update([(0, 0, 52, 52)], [0.9], 2.0)[0], 2.0) is False
