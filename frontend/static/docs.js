/* /docs: starts Swagger UI (vendor/swagger-ui, loaded before this file) on the OpenAPI document
 * the page names. A file of its own, so that the page's policy allows no inline script. */
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // the public validator would be asked about our document: nothing leaves this server
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset]
  });
})();
