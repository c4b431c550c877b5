"""HTML replies as real mail clients send them, each with its quoted history: one sample per
client, modelled on the markup each really sends. `CLIENTS`: client -> (the HTML, the start of
the answer above the quote, the start of the quote's attribution)."""

GMAIL = """<div dir="ltr">Thanks, that fixed it.<div><br></div><div>Anna</div></div><br>\
<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Mon, \
3 Mar 2025 at 10:00, Example Support &lt;<a href="mailto:support@example.com">\
support@example.com</a>&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px \
0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">Please \
restart the router.</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On \
Sun, 2 Mar 2025 at 09:00, Anna &lt;<a href="mailto:anna@example.org">anna@example.org</a>\
&gt; wrote:<br></div><blockquote class="gmail_quote">The router is down.</blockquote></div>\
</blockquote></div>
"""

APPLE = """<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">\
</head><body style="overflow-wrap: break-word; -webkit-nbsp-mode: space; line-break: \
after-white-space;">Yes, that works now.<div><br></div><div>Carl</div><div><br \
id="lineBreakAtBeginningOfMessage"><div><br><blockquote type="cite"><div>On 3 Mar 2025, at \
10:00, Example Support &lt;support@example.com&gt; wrote:</div><br \
class="Apple-interchange-newline"><div><div>Please restart the router.</div></div>\
</blockquote></div><br></div></body></html>"""

THUNDERBIRD = """<!DOCTYPE html><html><head><meta http-equiv="Content-Type" \
content="text/html; charset=UTF-8"></head><body><p>Still broken, the log is attached.</p>\
<p>Dana<br></p><div class="moz-cite-prefix">On 03/03/2025 10:00, Example Support wrote:<br>\
</div><blockquote type="cite" cite="mid:abc@example.com"><p>Please restart the router.</p>\
</blockquote></body></html>"""

OUTLOOK_WEB = """<html><head><style type="text/css" style="display:none;"> P \
{margin-top:0;margin-bottom:0;} </style></head><body dir="ltr"><div class="elementToProof" \
style="font-family: Aptos, Calibri, sans-serif; font-size: 12pt; color: rgb(0, 0, 0);">We \
still see the error.</div><div class="elementToProof">Erik</div><div id="appendonsend"></div>\
<hr style="display:inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" dir="ltr">\
<font face="Calibri, sans-serif" style="font-size:11pt" color="#000000"><b>From:</b> Example \
Support &lt;support@example.com&gt;<br><b>Sent:</b> Monday, March 3, 2025 10:00<br><b>To:</b> \
Erik &lt;erik@example.org&gt;<br><b>Subject:</b> Re: Router</font><div>&nbsp;</div></div>\
<div><div dir="ltr">Please restart the router.</div></div></body></html>"""

OUTLOOK_DESKTOP = """<html xmlns:o="urn:schemas-microsoft-com:office:office"><body lang="EN-US" \
link="#0563C1"><div class="WordSection1"><p class="MsoNormal">Thanks, we will try that.\
<o:p></o:p></p><p class="MsoNormal"><o:p>&nbsp;</o:p></p><div><div style="border:none;\
border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm"><p class="MsoNormal"><b><span \
lang="DE">Von:</span></b><span lang="DE"> Example Support &lt;support@example.com&gt; <br>\
<b>Gesendet:</b> Montag, 3. März 2025 10:00<br><b>An:</b> Fiona &lt;fiona@example.org&gt;<br>\
<b>Betreff:</b> AW: Router<o:p></o:p></span></p></div></div><p class="MsoNormal"><o:p>&nbsp;\
</o:p></p><p class="MsoNormal">Please restart the router.<o:p></o:p></p></div></body></html>"""

YAHOO = """<html><head></head><body><div class="ydp1a2b3c4dyahoo-style-wrap" \
style="font-family:Helvetica Neue, Helvetica, Arial, sans-serif;font-size:13px;"><div \
dir="ltr" data-setdir="false">Here is the invoice number: 4711.</div></div><div \
id="yahoo_quoted_9876543210" class="yahoo_quoted"><div style="font-family:'Helvetica Neue', \
Helvetica, Arial, sans-serif;font-size:13px;color:#26282a;"><div>On Monday, March 3, 2025 at \
10:00:00 AM GMT+1, Example Support &lt;support@example.com&gt; wrote:</div><div><br></div>\
<div><br></div><div><div dir="ltr">Which invoice is it about?</div></div></div></div></body>\
</html>"""

CLIENTS = {
    "gmail": (GMAIL, "Thanks, that fixed it.", "On Mon, 3 Mar 2025 at 10:00"),
    "apple": (APPLE, "Yes, that works now.", "On 3 Mar 2025, at 10:00"),
    "thunderbird": (THUNDERBIRD, "Still broken", "On 03/03/2025 10:00, Example Support wrote:"),
    "outlook-web": (OUTLOOK_WEB, "We still see the error.", "From: Example Support"),
    "outlook-desktop": (OUTLOOK_DESKTOP, "Thanks, we will try that.", "Von: Example Support"),
    "yahoo": (YAHOO, "Here is the invoice number: 4711.", "On Monday, March 3, 2025"),
}
