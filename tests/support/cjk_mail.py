"""Chinese and Japanese support mail as clients send it (GB2312 in base64, ISO-2022-JP, UTF-8
in quoted-printable), and the words a search must find in the middle of its sentences."""

# ruff: noqa: RUF001  (Chinese and Japanese text, with its full-width punctuation)

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from email.header import Header
from email.mime.text import MIMEText

from tests.support.corpus import CORPUS


@dataclass(frozen=True)
class CjkMail:
    msgid: str
    sender_name: str
    sender: str
    subject: str
    body: str
    charset: str
    # words of the body that stand between other characters (no space or punctuation around)
    words: tuple[str, ...]

    def raw(self, to: str = "support@example.test") -> bytes:
        msg = MIMEText(self.body, "plain", self.charset)
        msg["From"] = email.utils.formataddr(
            (str(Header(self.sender_name, self.charset)), self.sender)
        )
        msg["To"] = to
        msg["Subject"] = Header(self.subject, self.charset)
        msg["Message-ID"] = f"<{self.msgid}>"
        msg["Date"] = email.utils.format_datetime(email.utils.localtime())
        return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


LOGIN = CjkMail(
    msgid="zh-login@example.cn",
    sender_name="王小明",
    sender="wang.xiaoming@example.cn",
    subject="账户问题",
    body=(
        "您好：\n\n我从昨天开始一直无法登录我的账户，系统提示“密码错误”，但是我确定密码没有"
        "问题。麻烦帮忙查一下是什么原因。\n\n谢谢！\n王小明\n"
    ),
    charset="gb2312",
    words=("登录", "帮忙"),
)
INVOICE = CjkMail(
    msgid="ja-invoice@example.jp",
    sender_name="山田 太郎",
    sender="yamada@example.jp",
    subject="請求書について",
    body=(
        "サポートご担当者様\n\nいつもお世話になっております。山田です。\n先月分の請求書につきま"
        "して、お支払方法を銀行振込からクレジットカードに変更したいと考えております。\nまた、"
        "領収書の発行をお願いできますでしょうか。\n\nよろしくお願いいたします。\n"
    ),
    charset="iso-2022-jp",
    words=("支払方法", "発行"),
)
LOCKED = CjkMail(
    msgid="ja-locked@example.jp",
    sender_name="佐藤 花子",
    sender="sato@example.jp",
    subject="管理画面に入れません",
    body=(
        "昨日から管理画面にログインしようとすると、アカウントがロックされていると表示されま"
        "す。解除の方法を教えてください。\n"
    ),
    charset="utf-8",
    words=("ロック",),
)
MAILS = (LOGIN, INVOICE, LOCKED)
# a real message from another project's test mail (stalwart-eml, thirdparty/010.eml): Japanese
# in UTF-8 without a charset parameter, subject in an encoded word; its body is 人権の無視及
CORPUS_JAPANESE = CORPUS / "stalwart-eml" / "thirdparty" / "010.eml"
CORPUS_JAPANESE_WORD = "無視"
