"""Base images on a host: written whole or written again, and never by two builds at once.

A worker killed during an upload leaves a volume of the right name with part of the bytes;
the empty `<volume>.complete` volume written after the last byte is what tells a whole image
from that. The driver is the real one over libvirt's test driver.
"""

from __future__ import annotations

import threading

import pytest

from compute import redis_locks, tasks
from compute.driver_refs import host_ref, image_ref
from compute.drivers.libvirt import complete_marker, connect, driver_for
from compute.drivers.libvirt_xml import volume_xml
from tests.compute.hypervisor import assert_built_once


def pool_of(host):
    pool = connect(host.uri).storagePoolLookupByName(host.storage_pool)
    pool.refresh(0)
    return pool


def test_it_writes_again_a_base_image_whose_upload_was_cut_short(building):
    # given: the image's volume without its marker, as a worker killed mid-upload leaves it
    image, pool = building.image, pool_of(building.host)
    pool.createXML(volume_xml(image.volume_name, 1, "raw"), 0)
    # when
    assert tasks.provision.apply(args=[str(building.pk)]).get() == "running"
    # then: a whole image (its full size) with its marker, and the instance built on it
    assert pool_of(building.host).storageVolLookupByName(image.volume_name).info()[1] == image.size_bytes
    assert_built_once(building)


def test_it_keeps_a_whole_base_image(building):
    # given: a whole image volume (with its marker) of a recognisable size, 1 byte
    drv, ref, pool = driver_for(host_ref(building.host)), image_ref(building.image), pool_of(building.host)
    pool.createXML(volume_xml(ref.volume, 1, "raw"), 0)
    pool.createXML(volume_xml(complete_marker(ref.volume), 0, "raw"), 0)
    # when
    drv.ensure_base_image(ref)
    # then: the same volume, not written again at the image's size
    names = pool_of(building.host).listVolumes()
    assert sorted(n for n in names if n.startswith("img-")) == [ref.volume, complete_marker(ref.volume)]
    assert pool_of(building.host).storageVolLookupByName(ref.volume).info()[1] == 1


def test_deleting_an_image_removes_its_marker_too(building):
    drv, ref = driver_for(host_ref(building.host)), image_ref(building.image)
    drv.ensure_base_image(ref)

    drv.delete_image(ref)

    assert not [n for n in pool_of(building.host).listVolumes() if n.startswith("img-")]


def test_two_builds_of_one_image_on_one_host_take_turns(host):
    entered = threading.Event()

    def second_build():
        with redis_locks.held(host.pk, "image:turns", wait=10):
            entered.set()

    with redis_locks.held(host.pk, "image:turns"):
        waiting = threading.Thread(target=second_build)
        waiting.start()
        assert not entered.wait(0.5)  # held: the second build waits
    assert entered.wait(10)  # released: it goes on
    waiting.join()


def test_a_build_that_cannot_get_the_lock_in_time_is_retried_later(host):
    with (
        redis_locks.held(host.pk, "image:busy"),
        pytest.raises(redis_locks.Busy, match="busy"),
        redis_locks.held(host.pk, "image:busy", wait=0.2),
    ):
        pass
