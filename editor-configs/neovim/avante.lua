-- avante.nvim: Pactum as an ACP provider. Put this in your avante setup.
require("avante").setup({
  provider = "pactum",
  acp_providers = {
    pactum = {
      command = "/ABSOLUTE/PATH/TO/pactum",
      args = { "acp" },
      env = {},
    },
  },
})
