/* The campaign page (活动页): everything through the public JSON API, exactly like the app.
 *
 * No framework and no build step: plain ES2017 that the app's web view and any phone browser run.
 * The bearer token lives in localStorage. Busy (503 busy), paused (503 paused) and rate-limited (429)
 * answers show a banner that counts down the server's Retry-After and then retries the same request
 * (creating POSTs carry an Idempotency-Key, so a retry can never place a second order or card).
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("page-config").textContent);
  var API = config.api;
  var STEPS = [
    ["placed", "已下单"], ["sent_to_store", "已发送门店"], ["accepted", "门店已接单"],
    ["delivering", "配送中"], ["completed", "已送达"]
  ];
  var FINAL = { completed: 1, failed: 1, cancelled: 1 };
  var CANCELLABLE = { placed: 1, sent_to_store: 1 };
  var store = window.localStorage;
  var state = { token: store.getItem("miandan.token"), place: config.place, cards: [], showAllCards: false };

  function $(id) { return document.getElementById(id); }
  function esc(text) {
    return String(text == null ? "" : text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function money(value) { return "¥" + (value == null ? "0.00" : value); }
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function day(iso) { var d = new Date(iso); return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()); }
  function clock(iso) { var d = new Date(iso); return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()); }
  function maskPhone(p) { return p && p.length === 11 ? p.slice(0, 3) + "****" + p.slice(7) : (p || ""); }
  function newKey() {
    var rnd = window.crypto && window.crypto.getRandomValues ? Array.prototype.map.call(
      window.crypto.getRandomValues(new Uint8Array(12)), function (b) { return (b + 256).toString(16).slice(1); }).join("")
      : Math.random().toString(36).slice(2) + Date.now().toString(36);
    return "web-" + rnd;
  }
  function deviceId() {
    var id = store.getItem("miandan.device");
    if (!id) { id = newKey(); store.setItem("miandan.device", id); }
    return id;
  }
  function show(el, kind, text) {
    el.className = "notice " + kind;
    el.textContent = text;
    el.hidden = false;
  }
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  // --- the busy / paused banner --------------------------------------------------------------
  var waiting = 0;
  function bannerText(body, status) {
    if (body && body.code === "paused") { return body.detail || "该功能暂时暂停，请稍后再试"; }
    if (status === 429) { return (body && body.detail) || "操作太频繁了，请稍后再试"; }
    return "活动太火爆了，请稍后再试";
  }
  function countdown(text, seconds) {
    var banner = $("banner"), label = $("banner-text");
    waiting += 1;
    banner.hidden = false;
    return new Promise(function (resolve) {
      var left = Math.max(1, Math.ceil(seconds));
      function tick() {
        label.innerHTML = esc(text) + " · <b>" + left + "</b> 秒后自动重试";
        if (left <= 0) {
          waiting -= 1;
          if (!waiting) { banner.hidden = true; }
          resolve();
          return;
        }
        left -= 1;
        setTimeout(tick, 1000);
      }
      tick();
    });
  }

  // --- the API client ------------------------------------------------------------------------
  // Resolves to {status, body}; never rejects on an HTTP error (callers read body.code / body.detail).
  function call(method, path, body, opts) {
    opts = opts || {};
    var headers = { "Accept": "application/json" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    if (state.token && !opts.anonymous) { headers["Authorization"] = "Bearer " + state.token; }
    if (opts.key) { headers["Idempotency-Key"] = opts.key; }
    var attempts = 0;
    function once() {
      attempts += 1;
      return fetch(API + path, {
        method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit"
      }).then(function (response) {
        return response.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          var retryable = response.status === 503 || (response.status === 429 && opts.retry429 !== false);
          if (retryable && opts.retry !== false && attempts < 30) {
            var wait = parseInt(response.headers.get("Retry-After"), 10);
            if (!(wait >= 0)) { wait = (data && data.retry_after) || 2; }
            return countdown(bannerText(data, response.status), wait).then(once);
          }
          if (response.status === 401 && state.token && !opts.anonymous) { loggedOut("登录已过期，请重新登录"); }
          return { status: response.status, body: data || {}, headers: response.headers };
        });
      }, function () {
        // The network itself failed (offline, server restarting): the same friendly wait, then again.
        if (opts.retry === false || attempts >= 30) {
          return { status: 0, body: { code: "network", detail: "网络不太好，请稍后再试" } };
        }
        return countdown("网络不太好，正在重新连接", 3).then(once);
      });
    }
    return once();
  }

  // --- login ---------------------------------------------------------------------------------
  var resendTimer = null;
  function resendCountdown(seconds) {
    var button = $("send-code"), left = seconds;
    clearInterval(resendTimer);
    button.disabled = true;
    button.textContent = left + " 秒后重发";
    resendTimer = setInterval(function () {
      left -= 1;
      if (left <= 0) { clearInterval(resendTimer); button.disabled = false; button.textContent = "重新获取"; return; }
      button.textContent = left + " 秒后重发";
    }, 1000);
  }

  function sendCode() {
    var phone = $("phone").value.trim();
    var msg = $("login-msg");
    if (!/^1[3-9]\d{9}$/.test(phone)) { show(msg, "err", "请输入正确的 11 位手机号"); return; }
    $("send-code").disabled = true;
    call("POST", "/auth/otp", { phone: phone }, { anonymous: true, retry429: false }).then(function (r) {
      if (r.status === 202) {
        show(msg, "ok", "验证码已发送，5 分钟内有效");
        resendCountdown(30);
        if (r.body.debug_code) {
          $("demo-code-value").textContent = r.body.debug_code;
          $("demo-code").hidden = false;
        }
        $("code").focus();
      } else {
        $("send-code").disabled = false;
        show(msg, "err", r.body.detail || "验证码发送失败，请稍后再试");
        if (r.status === 429) { resendCountdown(parseInt(r.headers.get("Retry-After"), 10) || 30); }
      }
    });
  }

  function login(event) {
    event.preventDefault();
    var phone = $("phone").value.trim(), code = $("code").value.trim(), msg = $("login-msg");
    if (!/^1[3-9]\d{9}$/.test(phone)) { show(msg, "err", "请输入正确的 11 位手机号"); return; }
    if (!/^\d{6}$/.test(code)) { show(msg, "err", "验证码是 6 位数字"); return; }
    $("login-btn").disabled = true;
    call("POST", "/auth/token", { phone: phone, code: code, device_id: deviceId() }, { anonymous: true, retry429: false })
      .then(function (r) {
        $("login-btn").disabled = false;
        if (r.status === 200) {
          state.token = r.body.token;
          store.setItem("miandan.token", r.body.token);
          store.setItem("miandan.phone", r.body.user.phone);
          msg.hidden = true;
          $("demo-code").hidden = true;
          enter(r.body.user);
        } else {
          var left = r.body.attempts_left;
          show(msg, "err", (r.body.detail || "登录失败") + (left != null ? "（还可以试 " + left + " 次）" : ""));
        }
      });
  }

  function loggedOut(message) {
    state.token = null;
    store.removeItem("miandan.token");
    $("app").hidden = true;
    $("tabs").hidden = true;
    $("userbar").hidden = true;
    $("login").hidden = false;
    if (message) { show($("login-msg"), "info", message); }
  }

  function logout() {
    call("POST", "/auth/logout", undefined, { retry: false }).then(function () { loggedOut("已退出登录"); });
  }

  function enter(user) {
    $("login").hidden = true;
    $("app").hidden = false;
    $("tabs").hidden = false;
    $("userbar").hidden = false;
    $("me-phone").textContent = maskPhone(user.phone);
    loadCards();
    loadInvite();
    loadOrders();
    var params = new URLSearchParams(window.location.search);
    if (params.get("code")) {
      $("accept-code").value = params.get("code");
      show($("accept-msg"), "info", "好友邀请你参加：点“领取”，你们各得一张免单卡");
    }
  }

  // --- my cards ------------------------------------------------------------------------------
  function loadCards() {
    return call("GET", "/vouchers/?campaign=" + encodeURIComponent(config.slug) + "&page_size=100").then(function (r) {
      if (r.status !== 200) { return; }
      // Usable cards first (then the one being used), spent ones last; within a group the API's order (expiring first).
      var rank = { issued: 0, locked: 1, redeemed: 2, expired: 3, void: 4 };
      state.cards = r.body.results.map(function (c, i) { return [c, i]; }).sort(function (a, b) {
        return (rank[a[0].status] - rank[b[0].status]) || (a[1] - b[1]);
      }).map(function (pair) { return pair[0]; });
      renderCards(r.body.count);
    });
  }

  function renderCards(count) {
    var cards = state.cards, usable = 0, used = 0;
    cards.forEach(function (c) { if (c.status === "issued") { usable += 1; } if (c.status === "redeemed") { used += 1; } });
    $("card-count").innerHTML = count + "<small> / " + config.cap + " 张</small>";
    $("card-meter").style.width = Math.min(100, Math.round(count * 100 / config.cap)) + "%";
    $("card-summary").textContent = count ? ("可用 " + usable + " 张 · 已使用 " + used + " 张" +
      (count >= config.cap ? " · 已达上限" : " · 邀请好友还能再得 " + (config.cap - count) + " 张")) : "你还没有免单卡";
    $("join").hidden = count > 0 || !config.live;
    var shown = state.showAllCards ? cards : cards.slice(0, 4);
    $("ticket-list").innerHTML = shown.map(function (c) {
      var off = c.status === "issued" || c.status === "locked" ? "" : " is-off";
      return '<div class="ticket' + off + '" data-code="' + esc(c.code) + '">' +
        '<div class="face"><b>' + esc(String(parseFloat(c.face_value))) + '</b><span>元 · 无门槛</span></div>' +
        '<div class="info"><div class="t">免单卡 · ' + esc(c.source_display) + '</div>' +
        '<div>有效期至 ' + esc(day(c.expires_at)) + '</div>' +
        '<div class="muted small mono">' + esc(c.code) + '</div></div>' +
        '<span class="state st-' + esc(c.status) + '">' + esc(c.status_display) + '</span></div>';
    }).join("");
    var more = $("more-cards");
    more.hidden = cards.length <= 4;
    more.textContent = state.showAllCards ? "收起" : "展开全部 " + cards.length + " 张";
  }

  function join() {
    var button = $("join"), msg = $("join-msg");
    var version = new URLSearchParams(window.location.search).get("app_version") || config.minAppVersion;
    button.disabled = true;
    call("POST", "/campaigns/" + config.slug + "/join", { app_version: version }, { key: newKey() }).then(function (r) {
      button.disabled = false;
      if (r.status === 201 || r.status === 200) {
        show(msg, "ok", r.status === 201 ? "领取成功！1 张 " + config.face + " 元免单卡已放进卡包" : "你已经领过新人卡啦");
        loadCards();
      } else {
        show(msg, "err", r.body.detail || "领取失败，请稍后再试");
      }
    });
  }

  // --- invite --------------------------------------------------------------------------------
  function loadInvite() {
    call("GET", "/campaigns/" + config.slug + "/invite").then(function (r) {
      if (r.status !== 200) {
        $("invite-code").textContent = "暂不可用";
        $("share-text").value = r.body.detail || "";
        return;
      }
      state.invite = r.body;
      $("invite-code").textContent = r.body.code;
      $("share-text").value = r.body.share_text;
      var qr = $("invite-qr");
      qr.src = r.body.qr_svg_url;
      qr.hidden = false;
    });
    call("GET", "/campaigns/" + config.slug + "/referrals?page_size=100").then(function (r) {
      if (r.status !== 200 || !r.body.count) { $("invitees").textContent = "还没有好友接受你的邀请"; return; }
      $("invitees").innerHTML = "已邀请 " + r.body.count + " 位好友：" + r.body.results.map(function (x) {
        return '<span class="nowrap">' + esc(x.invitee) + "（" + esc(x.reward.outcome_display) + "）</span>";
      }).join("、");
    });
  }

  function copy(text, button, doneText) {
    function done(ok) {
      var label = button.dataset.label || button.textContent;
      button.dataset.label = label;
      button.textContent = ok ? doneText : "请长按文字复制";
      button.classList.toggle("ok", ok);
      setTimeout(function () { button.textContent = label; button.classList.remove("ok"); }, 2500);
    }
    function fallback() {
      var box = document.createElement("textarea");
      box.value = text;
      box.setAttribute("readonly", "");
      box.style.position = "fixed";
      box.style.opacity = "0";
      document.body.appendChild(box);
      box.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(box);
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }

  function accept(event) {
    event.preventDefault();
    var text = $("accept-code").value, msg = $("accept-msg");
    if (!text.trim()) { show(msg, "err", "请粘贴口令或输入邀请码"); return; }
    $("accept-btn").disabled = true;
    call("POST", "/campaigns/" + config.slug + "/referrals", { code: text }, { key: newKey() }).then(function (r) {
      $("accept-btn").disabled = false;
      if (r.status === 201) { show(msg, "ok", r.body.detail); $("accept-code").value = ""; loadCards(); }
      else if (r.status === 202) { show(msg, "info", r.body.detail); }
      else { show(msg, "err", r.body.detail || "邀请码无效"); }
    });
  }

  // --- chat order ----------------------------------------------------------------------------
  function reply(html) {
    var box = document.createElement("div");
    box.className = "reply";
    box.innerHTML = html;
    $("chat-thread").appendChild(box);
    box.scrollIntoView({ block: "nearest", behavior: "smooth" });
    return box;
  }

  function say(text) {
    var bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.textContent = text;
    $("chat-thread").innerHTML = "";
    $("chat-thread").appendChild(bubble);
  }

  function itemLines(items) {
    return '<ul class="lines">' + items.map(function (i) {
      var opts = [i.size, i.sugar, i.ice].filter(Boolean).join(" / ") || "门店默认做法";
      return "<li><span>" + esc(i.brand) + " " + esc(i.product) + " ×" + esc(i.quantity) +
        '<br><span class="opts">' + esc(opts) + "</span></span><span>" + money(i.line_total) + "</span></li>";
    }).join("") + "</ul>";
  }

  function sums(q) {
    var card = q.voucher ? "免单卡抵扣" : "免单卡";
    return '<div class="sum"><div><span>商品合计</span><span>' + money(q.total_price) + "</span></div>" +
      '<div class="minus"><span>' + card + "</span><span>" + (q.voucher ? "−" + money(q.subsidy) : "未使用") + "</span></div>" +
      '<div class="pay"><span>还需支付</span><span>' + money(q.amount_to_pay) + "</span></div></div>";
  }

  function ask(text, fullPrice) {
    text = (text || "").trim();
    if (!text) { return; }
    say(text);
    $("chat-send").disabled = true;
    var body = { text: text, lat: state.place.lat, lng: state.place.lng, campaign: config.slug,
                 preview: true, pay_full_price: !!fullPrice };
    var box = reply('<span class="muted">' + esc(config.appName) + "正在帮你找最近的门店…</span>");
    call("POST", "/orders/chat", body).then(function (r) {
      $("chat-send").disabled = false;
      if (r.status === 200) { return preview(box, body, r.body); }
      var b = r.body;
      if (b.code === "not_understood") {
        box.innerHTML = "<div>" + esc(b.detail) + "</div>" + (b.suggestions && b.suggestions.length ?
          '<div class="muted small" style="margin-top:6px">可以这样说：</div><div class="chips">' +
          b.suggestions.map(function (s) { return '<button type="button" class="chip">' + esc(s) + "</button>"; }).join("") +
          "</div>" : "");
        box.querySelectorAll(".chip").forEach(function (chip) {
          chip.addEventListener("click", function () { $("chat-text").value = chip.textContent; ask(chip.textContent); });
        });
      } else if (b.code === "no_voucher") {
        box.innerHTML = "<div>" + esc(b.detail) + '</div><div class="actions">' +
          '<button type="button" class="btn ghost" data-act="full">原价下单</button>' +
          '<button type="button" class="btn" data-act="invite">邀请好友得卡</button></div>';
        box.querySelector('[data-act="full"]').addEventListener("click", function () { ask(text, true); });
        box.querySelector('[data-act="invite"]').addEventListener("click", function () { $("invite").scrollIntoView(); });
      } else {
        box.innerHTML = '<div class="notice err" style="margin:0">' + esc(b.detail || "出了点问题，请稍后再试") + "</div>";
      }
    });
  }

  function preview(box, body, q) {
    var key = newKey();  // one key per confirmation: a retried or double-tapped confirm places one order
    box.innerHTML = '<div class="store">' + esc(q.store.brand) + " · " + esc(q.store.name) + "</div>" +
      '<div class="muted small">距你 ' + esc(q.store.distance_m) + " 米 · " + esc(q.store.address || q.store.district) + "</div>" +
      itemLines(q.items) + sums(q) +
      (q.voucher ? '<div class="muted small">使用免单卡 <span class="mono">' + esc(q.voucher) + "</span></div>" : "") +
      '<div class="actions"><button type="button" class="btn ghost" data-act="again">换一句</button>' +
      '<button type="button" class="btn" data-act="confirm" id="confirm-order">确认下单</button></div>';
    box.querySelector('[data-act="again"]').addEventListener("click", function () {
      $("chat-thread").innerHTML = "";
      $("chat-text").focus();
    });
    box.querySelector('[data-act="confirm"]').addEventListener("click", function (event) {
      event.target.disabled = true;
      event.target.textContent = "正在下单…";
      var order = Object.assign({}, body, { preview: false });
      call("POST", "/orders/chat", order, { key: key }).then(function (r) {
        if (r.status === 201) { track(box, r.body); loadCards(); return; }
        event.target.disabled = false;
        event.target.textContent = "确认下单";
        var err = box.querySelector(".notice") || box.appendChild(document.createElement("div"));
        show(err, "err", r.body.detail || "下单失败，请稍后再试");
      });
    });
  }

  function renderTracker(box, order) {
    var reached = {};
    (order.events || []).forEach(function (e) { reached[e.to_status] = e.created_at; });
    var failed = order.status === "failed" || order.status === "cancelled";
    var current = STEPS.map(function (s) { return s[0]; }).indexOf(order.status);
    var steps = STEPS.map(function (s, i) {
      var cls = i < current || order.status === "completed" ? "done" : (i === current ? "now" : "");
      return '<li class="' + cls + '">' + s[1] + (reached[s[0]] ? '<span class="when">' + clock(reached[s[0]]) + "</span>" : "") + "</li>";
    }).join("");
    var head = '<div class="store">订单 #' + esc(order.id) + " · " + esc(order.store.brand) + " " + esc(order.store.name) + "</div>";
    var status;
    if (order.status === "completed") {
      status = '<div class="done-banner" id="order-done">已送达，请慢用！</div>';
    } else if (failed) {
      status = '<div class="notice err">' + esc(order.status_display) + (order.failure_reason ? "：" + esc(order.failure_reason) : "") +
        (order.voucher ? "。免单卡已退回卡包，可以再点一单。" : "") + "</div>";
    } else {
      status = '<div class="muted" id="order-status">' + esc(order.status_display) + "…</div>";
    }
    box.innerHTML = head + itemLines(order.items) + sums(order) + status + (failed ? "" : '<ol class="steps">' + steps + "</ol>") +
      (CANCELLABLE[order.status] ? '<div class="actions"><button type="button" class="btn ghost" data-act="cancel">取消订单</button></div>' : "");
    box.dataset.status = order.status;
    var cancel = box.querySelector('[data-act="cancel"]');
    if (cancel) {
      cancel.addEventListener("click", function () {
        cancel.disabled = true;
        call("POST", "/orders/" + order.id + "/cancel", undefined).then(function (r) {
          if (r.status === 200) { renderTracker(box, r.body); loadCards(); loadOrders(); return; }
          cancel.disabled = false;
          show(box.appendChild(document.createElement("div")), "err", r.body.detail || "无法取消");
        });
      });
    }
  }

  // Follow the order until it is delivered (or fails): the fulfilment runs in workers, the page polls.
  function track(box, order) {
    renderTracker(box, order);
    loadOrders();
    var started = Date.now();
    function poll() {
      if (FINAL[box.dataset.status] || Date.now() - started > 15 * 60 * 1000) {
        loadCards();
        loadOrders();
        return;
      }
      sleep(document.hidden ? 5000 : 1500).then(function () {
        return call("GET", "/orders/" + order.id);
      }).then(function (r) {
        if (r && r.status === 200 && r.body.status !== box.dataset.status) { renderTracker(box, r.body); loadOrders(); }
        poll();
      });
    }
    poll();
  }

  // --- my orders -----------------------------------------------------------------------------
  function loadOrders() {
    return call("GET", "/orders/?page_size=10").then(function (r) {
      if (r.status !== 200) { return; }
      $("no-orders").hidden = r.body.count > 0;
      $("order-list").innerHTML = r.body.results.map(function (o) {
        var what = o.items.map(function (i) { return esc(i.product) + " ×" + esc(i.quantity); }).join("，");
        return '<li data-order="' + esc(o.id) + '"><div class="top"><span><b>' + esc(o.store.brand) + "</b> " + esc(o.store.name) +
          '</span><span class="pill ' + esc(o.status) + '">' + esc(o.status_display) + "</span></div>" +
          "<div>" + what + "</div>" +
          '<div class="muted small">' + day(o.created_at) + " " + clock(o.created_at) + " · 实付 " + money(o.amount_to_pay) +
          (o.voucher ? "（免单卡抵扣 " + money(o.subsidy) + "）" : "") + "</div></li>";
      }).join("");
    });
  }

  // --- location ------------------------------------------------------------------------------
  function renderPlace() {
    $("place-label").textContent = state.place.label + (state.place === config.place ? "（演示位置）" : "");
  }
  function useLocation() {
    if (!navigator.geolocation) { $("place-label").textContent = "无法获取位置，继续使用" + config.place.label; return; }
    $("place-label").textContent = "正在定位…";
    navigator.geolocation.getCurrentPosition(function (pos) {
      state.place = { lat: pos.coords.latitude, lng: pos.coords.longitude, label: "我的位置" };
      renderPlace();
    }, function () {
      state.place = config.place;
      $("place-label").textContent = "无法获取位置，继续使用" + config.place.label;
    }, { timeout: 8000, maximumAge: 600000 });
  }

  // --- wiring --------------------------------------------------------------------------------
  $("send-code").addEventListener("click", sendCode);
  $("login-form").addEventListener("submit", login);
  $("fill-code").addEventListener("click", function () { $("code").value = $("demo-code-value").textContent; });
  $("logout").addEventListener("click", logout);
  $("join").addEventListener("click", join);
  $("more-cards").addEventListener("click", function () { state.showAllCards = !state.showAllCards; renderCards(state.cards.length); });
  $("copy-share").addEventListener("click", function () { if (state.invite) { copy(state.invite.share_text, $("copy-share"), "已复制口令"); } });
  $("copy-link").addEventListener("click", function () { if (state.invite) { copy(state.invite.url, $("copy-link"), "已复制链接"); } });
  $("accept-form").addEventListener("submit", accept);
  $("chat-form").addEventListener("submit", function (event) { event.preventDefault(); ask($("chat-text").value); });
  $("use-location").addEventListener("click", useLocation);
  $("refresh-orders").addEventListener("click", loadOrders);
  $("examples").innerHTML = config.examples.map(function (e) { return '<button type="button" class="chip">' + esc(e) + "</button>"; }).join("");
  $("examples").querySelectorAll(".chip").forEach(function (chip) {
    chip.addEventListener("click", function () { $("chat-text").value = chip.textContent; ask(chip.textContent); });
  });
  renderPlace();

  var invited = new URLSearchParams(window.location.search).get("code");
  if (invited) { show($("login-msg"), "info", "好友送你一张免单卡：登录后领取（邀请码 " + invited.toUpperCase().slice(0, 16) + "）"); }
  if (state.token) {
    call("GET", "/me").then(function (r) {
      if (r.status === 200) { enter(r.body); } else { loggedOut(); }
    });
  }
})();
