"""What the services say and what happened, in the reader's language: refusals on the API (by
Accept-Language, English by default) and on the pages, the labels of the action and activity
logs, and mails written per recipient (tenants.notices.languages_of)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.utils import translation

from base.errors import QuotaExceeded
from compute import history
from compute import notices as compute_notices
from compute.models import Instance, InstanceAction, InstanceState
from portal.api.errors import as_api_exception
from tenants import services as tenant_services
from tests.conftest import actor, client_for, token_for
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


def chinese(user) -> None:
    user.language = "zh-hans"
    user.save(update_fields=["language"])


def test_it_refuses_on_the_api_in_chinese_when_asked_and_in_english_by_default(alice, tenant_a, make_instance):
    # given: a running instance, and a token client
    instance = make_instance("web-1")
    client = client_for(token=token_for(alice, tenant_a))

    # when: it is started again, once with Accept-Language: zh-hans and once without
    chinese_answer = client.post(f"/api/v1/instances/{instance.pk}/start", HTTP_ACCEPT_LANGUAGE="zh-hans")
    english_answer = client.post(f"/api/v1/instances/{instance.pk}/start")

    # then: the same 409 and code, the sentence in each language (the English as it always was)
    assert chinese_answer.status_code == english_answer.status_code == 409
    assert chinese_answer.json()["code"] == english_answer.json()["code"] == "conflict"
    assert chinese_answer.json()["detail"] == "实例处于“运行中”状态，无法启动；启动要求实例处于：已停止。"
    assert english_answer.json()["detail"] == "Cannot start an instance that is running; start needs it to be stopped."


def test_it_names_the_field_of_an_invalid_input_in_chinese(alice, tenant_a):
    client = client_for(token=token_for(alice, tenant_a))
    body = {"name": "k", "public_key": "ssh-foo AAAA"}

    answer = client.post("/api/v1/ssh-keys", body, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans")

    assert answer.status_code == 400
    assert answer.json()["fields"]["public_key"][0].startswith("不支持的密钥类型")


def test_it_translates_the_quota_sentence_of_base_errors():
    refusal = QuotaExceeded("vcpus", in_use=2, requested=4, limit=4)
    with translation.override("zh-hans"):
        chinese_text = str(as_api_exception(refusal).detail)
    with translation.override("en"):
        english_text = str(as_api_exception(refusal).detail)

    assert chinese_text == "超出 vcpus 的配额：已用 2 + 申请 4 > 上限 4。"
    assert english_text == refusal.message  # base.errors' own sentence, byte for byte


def test_it_shows_a_refusal_on_a_chinese_page_in_chinese(alice, tenant_a, make_instance):
    # given: alice reads the portal in Chinese, and her instance runs
    chinese(alice)
    instance = make_instance("web-1")
    client = browser_client(alice)

    # when: she asks to start it again
    response = post(client, f"/instances/{instance.pk}/start", follow=True)

    # then: the page says why not, in Chinese
    page = response.content.decode()
    assert "实例处于“运行中”状态，无法启动" in page
    assert "Cannot start" not in page


def test_it_shows_the_action_log_with_chinese_labels_and_keeps_the_codes(alice, bob, tenant_a, make_instance):
    # given: a built instance (a "create" action in image, disk, ... steps) and a reader of Chinese
    instance = make_instance("web-1")
    chinese(alice)

    # when
    page = browser_client(alice).get(f"/instances/{instance.pk}").content.decode()

    # then: the log's action and steps are labels; the database keeps the codes
    log = page[page.index('id="action-log"') :]
    assert "<td>创建</td>" in log and "<td>镜像</td>" in log and "<td>定义</td>" in log
    assert "<td>create</td>" not in log
    assert InstanceAction.objects.filter(instance=instance, action="create", step="image").exists()
    # and bob, who reads English, sees English labels
    english = browser_client(bob).get(f"/instances/{instance.pk}").content.decode()
    assert "<td>Create</td>" in english and "<td>Image</td>" in english


def test_it_shows_the_activity_log_with_chinese_labels(alice, tenant_a, make_instance):
    make_instance("web-1")
    chinese(alice)

    page = browser_client(alice).get("/tenant/activity").content.decode()

    assert 'data-action="instance.create"' in page and "实例已创建" in page


def test_it_mails_a_notice_to_each_recipient_in_their_language(alice, bob, tenant_a, make_instance):
    # given: alice reads Chinese, bob chose English; an instance of their tenant fails
    chinese(alice)
    bob.language = "en"
    bob.save(update_fields=["language"])
    web = make_instance("web-1")
    history.record_state(web.pk, InstanceState.ERROR, cause="system")
    mail.outbox.clear()

    # when
    compute_notices.send_pending()

    # then: one message each, in each one's language
    by_recipient = {tuple(m.to): m for m in mail.outbox}
    assert sorted(by_recipient) == [("alice@example.com",), ("bob@example.com",)]
    assert by_recipient[("bob@example.com",)].subject == "[Cloud Portal] Instance web-1 is in error"
    chinese_mail = by_recipient[("alice@example.com",)]
    assert "web-1" in chinese_mail.subject and "is in error" not in chinese_mail.subject
    assert chinese_mail.body.startswith("您好") and "您收到此邮件" in chinese_mail.body


def test_it_writes_an_invitation_in_the_invitees_or_else_the_inviters_language(alice, bob, tenant_a, charlie):
    # given: alice (the inviter) reads Chinese; charlie has an account and chose English
    chinese(alice)
    charlie.language = "en"
    charlie.save(update_fields=["language"])
    mail.outbox.clear()

    # when: she invites an address without an account, and charlie
    tenant_services.invitation_create(actor=actor(alice, tenant_a), email="newcomer@example.com", role="member")
    tenant_services.invitation_create(actor=actor(alice, tenant_a), email=charlie.email, role="viewer")

    # then: the newcomer's mail is in alice's language, charlie's in his
    newcomer, known = mail.outbox
    assert newcomer.subject == "邀请您加入 Tenant A"
    assert "以成员身份加入 Tenant A" in newcomer.body and "接受邀请：" in newcomer.body
    assert known.subject == "You are invited to Tenant A"
    assert known.body.startswith("alice@example.com invited you to join Tenant A as viewer.")


def test_it_hands_the_static_scripts_their_words_in_the_pages_language(alice, tenant_a, make_instance):
    # given: a reader of Chinese and her running instance, with a console
    chinese(alice)
    instance = make_instance("web-1")
    Instance.objects.filter(pk=instance.pk).update(vnc_port=5901)
    client = browser_client(alice)

    # when
    console = client.get(f"/instances/{instance.pk}/console").content.decode()
    detail = client.get(f"/instances/{instance.pk}").content.decode()

    # then: console.js, charts.js and portal.js find their words on the page (no inline script)
    assert '<html lang="zh-hans">' in console and 'data-t-connected="已连接"' in console
    assert 'data-t-instance-is="已断开：实例现在的状态是{state}。"' in console
    assert 'data-label-rx="接收"' in detail and 'data-label-tx="发送"' in detail
    assert 'data-copied-label="已复制"' in detail and 'data-state-label="运行中"' in detail
