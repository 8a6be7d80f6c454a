"""Plain LINE text from email content: HTML conversion, UTF-16 lengths, truncation."""

# Japanese samples use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import random

import pytest

from router.line.derived_text import derive_line_text, html_to_text, truncate_utf16, utf16_len

# utf16_len


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("", 0),
        ("hello", 5),
        ("こんにちは", 5),  # BMP: one unit each
        ("🍎", 2),  # outside the BMP: a surrogate pair
        ("👨‍👩‍👧", 8),  # three emoji joined by two ZWJ
        ("🇯🇵", 4),
        ("a\U00020b9fb", 4),  # a kanji from CJK Extension B
        ("\ud83d", 1),  # a lone surrogate still occupies one unit
    ],
)
def test_utf16_len(text: str, units: int) -> None:
    assert utf16_len(text) == units


# html_to_text: a marketing email

MARKETING_EMAIL = """<!DOCTYPE html>
<html lang="ja">
<head>
<meta charset="utf-8">
<title>春のセール</title>
<style>
  .btn { background:#06c755; }
  @media (max-width:600px) { .col { width:100% !important; } }
</style>
<!--[if mso]><xml><o:OfficeDocumentSettings><o:PixelsPerInch>96</o:PixelsPerInch>
</o:OfficeDocumentSettings></xml><![endif]-->
</head>
<body style="margin:0;padding:0;">
<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;
  max-width:0px;opacity:0;overflow:hidden;mso-hide:all;">
  最大50%OFF！週末限定のお知らせです&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;
</div>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
  <tr>
    <td align="center" style="padding:10px;font-size:12px;">
      メールが正しく表示されない場合は<a href="https://mail.example.jp/view?id=123&amp;u=abc">こちら</a>
    </td>
  </tr>
  <tr>
    <td align="center">
      <a href="https://shop.example.jp/?utm_source=mail"><img src="https://cdn.example.jp/logo.png"
         width="200" height="50" alt="Example Shop"></a>
    </td>
  </tr>
  <tr>
    <td style="padding:20px;">
      <h1 style="font-size:24px;">春の感謝セール開催中！</h1>
      <p>山田 太郎 様</p>
      <p>いつもご利用いただき、ありがとうございます。
      今週末限定で、人気商品が最大50%OFFになります。</p>
      <p>価格は&yen;1,000&nbsp;から &amp; 送料無料 &lt;3,000円以上&gt;。</p>
      <ul>
        <li>対象期間：3月1日〜3月3日</li>
        <li>対象商品：<strong>全品</strong></li>
      </ul>
      <table role="presentation" cellpadding="0" cellspacing="0"><tr>
        <td class="btn" style="border-radius:4px;">
          <!--[if mso]><v:roundrect href="https://shop.example.jp/sale">
          <center>今すぐチェック</center></v:roundrect><![endif]-->
          <a href="https://shop.example.jp/sale?utm_campaign=spring"
             style="display:inline-block;padding:12px 24px;color:#fff;mso-hide:all;">今すぐチェック</a>
        </td>
      </tr></table>
      <div style="font-size:0;">
        <div style="display:inline-block;width:280px;font-size:14px;"><p>商品A ¥2,000</p></div>
        <div style="display:inline-block;width:280px;font-size:14px;"><p>商品B ¥3,000</p></div>
      </div>
      <table><tr><th>商品</th><th>価格</th></tr><tr><td>Tシャツ</td><td>¥1,500</td></tr></table>
      <p>詳しくは <a href="https://shop.example.jp/faq">https://shop.example.jp/faq</a> をご覧ください。</p>
    </td>
  </tr>
  <tr>
    <td style="font-size:11px;color:#999;">
      配信停止は<a href="https://mail.example.jp/unsubscribe?u=abc">こちら</a> ／
      お問い合わせ：<a href="mailto:support@example.jp">support@example.jp</a><br>
      <a href="#top">ページ上部へ</a> <a href="javascript:void(0)">閉じる</a>
      &copy; 2024 Example Inc.
    </td>
  </tr>
</table>
<img src="https://track.example.jp/open.gif?u=abc" width="1" height="1" alt="" style="display:block;">
<a href="https://track.example.jp/click"><img src="https://track.example.jp/p.gif" width="1" height="1"></a>
<script>window.x = "<p>never shown</p>";</script>
</body>
</html>
"""

MARKETING_TEXT = """\
メールが正しく表示されない場合はこちら https://mail.example.jp/view?id=123&u=abc
https://shop.example.jp/?utm_source=mail

春の感謝セール開催中！

山田 太郎 様

いつもご利用いただき、ありがとうございます。今週末限定で、人気商品が最大50%OFFになります。

価格は¥1,000 から & 送料無料 <3,000円以上>。

・対象期間：3月1日〜3月3日
・対象商品：全品

今すぐチェック https://shop.example.jp/sale?utm_campaign=spring

商品A ¥2,000

商品B ¥3,000

商品 価格
Tシャツ ¥1,500

詳しくは https://shop.example.jp/faq をご覧ください。

配信停止はこちら https://mail.example.jp/unsubscribe?u=abc ／お問い合わせ：support@example.jp
ページ上部へ 閉じる © 2024 Example Inc."""


def test_marketing_email_reads_as_plain_text() -> None:
    assert html_to_text(MARKETING_EMAIL) == MARKETING_TEXT


def test_marketing_email_drops_what_readers_never_see() -> None:
    text = html_to_text(MARKETING_EMAIL)
    for hidden in ("週末限定のお知らせ", "春のセール", ".btn", "never shown", "track.example.jp"):
        assert hidden not in text
    assert "\u200c" not in text and "\xa0" not in text


# html_to_text: hidden content


@pytest.mark.parametrize(
    "style",
    [
        "display:none",
        "DISPLAY: NONE !important",
        "visibility:hidden",
        "max-height:0px;overflow:hidden",
        "opacity:0",
        "opacity: 0.0",
        "color:#fff; display : none ; mso-hide:all",
    ],
)
def test_hidden_preheader_styles(style: str) -> None:
    html = f'<div style="{style}">preheader text</div><p>Body</p>'
    assert html_to_text(html) == "Body"


def test_hidden_attribute_and_ignored_elements() -> None:
    html = (
        "<head><title>Title</title><style>p{color:red}</style></head>"
        "<span hidden>secret</span><script>var a = 1;</script><template>t</template>"
        "<!-- a comment --><p>shown</p>"
    )
    assert html_to_text(html) == "shown"


def test_mso_hide_alone_does_not_hide() -> None:
    # Outlook-only hiding marks the non-Outlook copy of a button, which readers do see.
    html = '<a href="https://e.com/buy" style="mso-hide:all">Buy</a>'
    assert html_to_text(html) == "Buy https://e.com/buy"


def test_font_size_zero_hides_text_but_not_children_that_reset_it() -> None:
    html = (
        '<div style="font-size:0">gap<div style="font-size:16px">Column one</div>'
        '<span style="font-size:0px">hidden</span><div style="font-size:16px">Two</div></div>'
    )
    assert html_to_text(html) == "Column one\nTwo"


def test_linked_image_in_a_zero_font_size_cell_still_counts() -> None:
    # Image cells often set font-size:0 to close the gap under the image.
    html = (
        '<td style="font-size:0"><a href="https://e.com/b"><img src="b.png" width="600"></a></td>'
    )
    assert html_to_text(html) == "https://e.com/b"


def test_unclosed_hidden_element_ends_with_its_parent() -> None:
    html = '<table><tr><td><span style="display:none">preheader</td></tr></table><p>Body</p>'
    assert html_to_text(html) == "Body"


# html_to_text: tracking pixels, images and links


@pytest.mark.parametrize(
    "pixel",
    [
        '<img src="https://t.example/o.gif" width="1" height="1">',
        '<img src="https://t.example/o.gif" width="0" height="0">',
        '<img src="https://t.example/o.gif" height="1px">',
        '<img src="https://t.example/o.gif" style="width:1px;height:1px">',
        '<img src="https://t.example/o.gif" style="display:none">',
    ],
)
def test_link_around_a_tracking_pixel_disappears(pixel: str) -> None:
    assert html_to_text(f'<p>Hi</p><a href="https://t.example/c">{pixel}</a>') == "Hi"


def test_linked_image_shows_its_url() -> None:
    html = '<a href="https://shop.example/sale"><img src="banner.png" width="600" alt="Sale"></a>'
    assert html_to_text(html) == "https://shop.example/sale"


def test_link_label_then_url() -> None:
    html = '<p>Read <a href="https://e.com/news?id=1&amp;x=2">the news</a> today.</p>'
    assert html_to_text(html) == "Read the news https://e.com/news?id=1&x=2 today."


def test_label_equal_to_url_is_not_repeated() -> None:
    assert html_to_text('<a href="https://e.com/a">https://e.com/a</a>') == "https://e.com/a"
    # A label that only drops the scheme or trailing slash is the same link.
    assert html_to_text('<a href="https://www.e.com/">www.e.com</a>') == "https://www.e.com/"


def test_empty_anchor_shows_its_url() -> None:
    assert html_to_text('Go: <a href="https://e.com/x"></a>') == "Go: https://e.com/x"


@pytest.mark.parametrize(
    "href",
    ["mailto:info@e.com", "javascript:void(0)", "#top", "#", "tel:0312345678", "/relative"],
)
def test_non_web_links_keep_only_their_label(href: str) -> None:
    assert html_to_text(f'<a href="{href}">お問い合わせ</a>') == "お問い合わせ"


def test_label_spanning_blocks_gets_url_after_its_last_line() -> None:
    html = '<a href="https://e.com/"><p>Shop</p><p>Now</p></a><p>Next</p>'
    assert html_to_text(html) == "Shop\n\nNow https://e.com/\n\nNext"


# html_to_text: layout


def test_blocks_lists_and_breaks() -> None:
    html = (
        "<h2>お知らせ</h2><div>一行目</div><div>二行目<br>三行目</div>"
        "<ul><li>りんご</li><li>みかん<ul><li>温州</li></ul></li></ul>"
        "<ol><li>登録</li><li>購入</ol><p>以上</p>"
    )
    assert html_to_text(html) == (
        "お知らせ\n\n一行目\n二行目\n三行目\n\n・りんご\n・みかん\n・温州\n\n1. 登録\n2. 購入\n\n以上"
    )


def test_at_most_one_blank_line_in_a_row() -> None:
    html = "<p>a</p><br><br><br><p></p><div></div><br><br><p>b</p>"
    assert html_to_text(html) == "a\n\nb"


def test_whitespace_collapsed_and_cjk_line_breaks_joined() -> None:
    html = "<p>  Hello\n   world  </p><p>日本語の\n  文章です。\nAnd\nEnglish</p>"
    assert html_to_text(html) == "Hello world\n\n日本語の文章です。 And English"


def test_japanese_text_and_ideographic_space_untouched() -> None:
    html = "<p>ｶﾀｶﾅと全角ＡＢＣ、そして　全角スペース。</p>"
    assert html_to_text(html) == "ｶﾀｶﾅと全角ＡＢＣ、そして　全角スペース。"


def test_entities_decoded() -> None:
    html = "<p>A&amp;B &lt;tag&gt; &quot;q&quot; &#12354; &#x1F600; &yen;500&nbsp;&nbsp;円</p>"
    assert html_to_text(html) == 'A&B <tag> "q" あ 😀 ¥500 円'


def test_table_cells_on_one_line_rows_on_their_own() -> None:
    html = "<table><tr><td>商品</td><td>価格</td></tr><tr><td>Tシャツ<td>¥1,500</table>"
    assert html_to_text(html) == "商品 価格\nTシャツ ¥1,500"


def test_malformed_html_does_not_lose_text() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>italic") == "unclosed bold italic"
    assert html_to_text("<html><head><title>T</title><body>no head end") == "no head end"
    assert html_to_text("plain text, no tags") == "plain text, no tags"
    assert html_to_text("") == ""


# truncate_utf16


def test_text_that_fits_is_unchanged() -> None:
    text = "あ" * 4998 + "🍎"  # exactly 5,000 units
    assert truncate_utf16(text, 5000) is text


def test_result_never_exceeds_the_limit_and_keeps_the_ellipsis() -> None:
    result = truncate_utf16("a" * 6000, 5000)
    assert utf16_len(result) <= 5000
    assert result.endswith("…")
    assert truncate_utf16("abcdef", 5, ellipsis="...") == "ab..."


# With a limit of 60 and a one-unit ellipsis there is room for 59 units; the cut looks
# for a boundary in the last fifth of that room, code points 48 to 58.


def test_cuts_at_a_paragraph_break_near_the_end() -> None:
    text = "あ" * 50 + "\n\n" + "い" * 3 + "。" + "う" * 100
    assert truncate_utf16(text, 60) == "あ" * 50 + "…"


def test_prefers_a_line_break_to_a_sentence_end() -> None:
    text = "x" * 50 + "\n" + "一文目。二文目。三文目。" * 5
    assert truncate_utf16(text, 60) == "x" * 50 + "…"


def test_boundary_outside_the_window_is_not_used() -> None:
    # A paragraph break at 10 of 59 would throw most of the room away: cut late instead.
    text = "あ" * 10 + "\n\n" + "い" * 100
    assert truncate_utf16(text, 60) == "あ" * 10 + "\n\n" + "い" * 47 + "…"


def test_cuts_after_a_japanese_sentence_end() -> None:
    text = "今日は晴れです。" * 7 + "明日はきっと雨が降るでしょうからお気をつけてお出かけください"
    assert truncate_utf16(text, 60) == "今日は晴れです。" * 7 + "…"


def test_sentence_end_keeps_its_closing_bracket() -> None:
    text = "彼は「はい！」と言った" + "あ" * 40
    assert truncate_utf16(text, 8) == "彼は「はい！」…"


def test_ascii_full_stop_only_before_a_space() -> None:
    text = "Version 3.5 is out. Upgrade now from example.com/download please"
    assert truncate_utf16(text, 21) == "Version 3.5 is out.…"
    # No sentence end nor space in the window: a plain cut, never at "3.5".
    assert truncate_utf16("ab 3.5cdefghijklmnopqrstuvwxyz", 12) == "ab 3.5cdefg…"


def test_falls_back_to_whitespace() -> None:
    text = "one two three four five six seven eight nine ten"
    assert truncate_utf16(text, 20) == "one two three four…"


def test_hard_cut_never_splits_a_surrogate_pair() -> None:
    text = "🍎" * 10
    result = truncate_utf16(text, 6)  # room for 5 units: two apples and half of one
    assert result == "🍎🍎…"
    result.encode("utf-16", "strict")  # no lone surrogate left behind


def test_hard_cut_keeps_emoji_sequences_whole() -> None:
    assert truncate_utf16("ab👨‍👩‍👧cd", 6) == "ab…"
    assert truncate_utf16("ab🇯🇵🇯🇵cd", 9) == "ab🇯🇵…"
    assert truncate_utf16("abcde\u0301fgh", 6) == "abcd…"  # e + combining acute


def test_never_cuts_inside_a_url() -> None:
    url = "https://example.com/campaign/spring?utm_source=line&utm_medium=push"
    text = "詳細はこちら " + url + " をご覧ください"
    result = truncate_utf16(text, 40)
    assert result == "詳細はこちら…"
    # A URL right after Japanese text, with no space, is dropped whole too.
    assert truncate_utf16("詳細は" + url, 30) == "詳細は…"


def test_url_after_other_ascii_runs_is_found() -> None:
    # The URL's run starts after an earlier run of ASCII; the cut lands deep inside it.
    text = "a" * 3000 + " " + "https://e.com/" + "b" * 4000
    assert truncate_utf16(text, 4600) == "a" * 3000 + "…"


def test_url_that_fits_is_kept_whole() -> None:
    url = "https://example.com/a"
    text = "見てね " + url + " " + "あ" * 100
    assert truncate_utf16(text, 29) == "見てね " + url + "…"


def test_limit_too_small_for_the_ellipsis() -> None:
    with pytest.raises(ValueError, match="no room for the ellipsis"):
        truncate_utf16("abc", 2, ellipsis="...")
    with pytest.raises(ValueError, match="must not be negative"):
        truncate_utf16("abc", -1)
    assert truncate_utf16("abc", 1) == "…"


def test_random_texts_always_fit_and_are_prefixes() -> None:
    rng = random.Random(20240301)
    pieces = [
        "あ",
        "。",
        "a",
        " ",
        "\n",
        "\n\n",
        "😀",
        "👨‍👩‍👧",
        "🇯🇵",
        ".",
        "https://e.com/x?y=1",
        "　",
    ]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 200)))
        limit = rng.randint(1, 120)
        result = truncate_utf16(text, limit)
        assert utf16_len(result) <= limit
        result.encode("utf-16", "strict")
        if result != text:
            assert result.endswith("…")
            assert text.startswith(result[:-1])


# derive_line_text


def test_subject_blank_line_then_text_part() -> None:
    assert derive_line_text("件名", "本文です。\r\n二行目", "<p>HTML</p>") == (
        "件名\n\n本文です。\n二行目"
    )


def test_html_used_when_text_part_is_empty() -> None:
    assert derive_line_text("件名", "  \n ", "<p>HTML<br>本文</p>") == "件名\n\nHTML\n本文"
    assert derive_line_text("件名", None, "<p>HTML</p>") == "件名\n\nHTML"


def test_subject_or_body_alone() -> None:
    assert derive_line_text("件名だけ", None, None) == "件名だけ"
    assert derive_line_text(None, "本文だけ", None) == "本文だけ"
    assert derive_line_text("", None, "<p>HTMLだけ</p>") == "HTMLだけ"


def test_nothing_to_send_raises() -> None:
    with pytest.raises(ValueError, match="no subject, text or html"):
        derive_line_text(None, None, None)
    with pytest.raises(ValueError):
        derive_line_text("  ", "", '<div style="display:none">only a preheader</div>')


def test_derived_text_is_cut_to_the_limit() -> None:
    body = "お知らせです。" * 1000  # 7,000 units
    result = derive_line_text("件名", body, None)
    assert utf16_len(result) <= 5000
    assert result.startswith("件名\n\nお知らせです。")
    assert result.endswith("。…")
    assert utf16_len(derive_line_text("件名", body, None, limit=100)) <= 100
