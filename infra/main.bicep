// Event relay on Azure Functions Flex Consumption (Python 3.11 or 3.12, Linux).
// Deploy into an existing resource group:
//   az deployment group create -g <rg> -n relay -f infra/main.bicep -p environmentName=<name>
// or run `azd up` (azure.yaml; azd fills infra/main.parameters.json from its environment).
// One module per concern under ./modules.

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(32)
@description('Environment name (azd) or short prefix: lowercase letters, digits and hyphens. It names every resource and, with the subscription, resource group and location, seeds their unique suffix.')
param environmentName string

@minLength(1)
@description('Azure region for every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations -o table).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Python version of the function app (both are Flex Consumption runtimes).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Memory of each Flex Consumption instance, in MB: billed per GB-second while it runs. The bench measured a peak RSS of about 150 MB at a fan-out of 10,000.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Most instances the app scales out to (Flex Consumption: at least 40, at most 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('HTTP requests one instance serves at a time (scaleAndConcurrency.triggers.http.perInstanceConcurrency). Unset, Flex gives Python 1: every concurrent call a new instance and its cold start.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 4

@description('Always-ready instances of the `http` group (publish, subscribe, console): no cold start for the first calls, billed at the baseline rate while idle. 0: scale to zero.')
@minValue(0)
@maxValue(1000)
param alwaysReadyHttpInstances int = 0

// The relay's settings (relay/core/settings.py SETTINGS), as strings exactly as the app reads them.
// Defaults are the contract defaults.

@description('RELAY_RETRY_SCHEDULE: delays between delivery attempts (units ms, s, m, h).')
param relayRetrySchedule string = '5s,5m,30m,2h,5h,10h,10h'

@description('RELAY_DELIVERY_TIMEOUT: seconds one delivery attempt may take.')
param relayDeliveryTimeout string = '30'

@description('RELAY_ALLOW_PRIVATE_TARGETS: true allows plain http and non-public notification addresses (local work only; keep false in Azure).')
@allowed([
  'false'
  'true'
])
param relayAllowPrivateTargets string = 'false'

@description('RELAY_MAX_EVENT_BYTES: largest event accepted, in bytes of its JSON.')
param relayMaxEventBytes string = '1048576'

@description('RELAY_EVENT_RETENTION_DAYS: days published events stay readable for polling, replay and de-duplication.')
param relayEventRetentionDays string = '7'

@description('RELAY_PUBLIC_URL: scheme and host every absolute URL the relay writes starts with (a custom domain, API Management, Front Door). Empty: https:// + the app\'s own host name.')
param relayPublicUrl string = ''

@secure()
@description('RELAY_TOKEN_KEY: the key (at least 32 characters) that signs continuation tokens and trigger states, or a Key Vault reference (@Microsoft.KeyVault(SecretUri=...)). Empty: a key the relay keeps in its relaykeys table.')
param relayTokenKey string = ''

@secure()
@description('RELAY_TOKEN_KEY_PREVIOUS: the key relayTokenKey replaced; tokens it signed keep opening. Keep it for RELAY_EVENT_RETENTION_DAYS after a rotation, then empty it.')
param relayTokenKeyPrevious string = ''

@description('RELAY_AUTH: keys (function keys, any key may do everything) or entra (Microsoft Entra ID principals with app roles, behind App Service Authentication; needs entraClientId and entraAudience).')
@allowed([
  'keys'
  'entra'
])
param authMode string = 'keys'

@description('authMode entra: application (client) id of the relay\'s app registration (README, "Microsoft Entra ID access").')
param entraClientId string = ''

@description('authMode entra: its Application ID URI, e.g. api://<client id>.')
param entraAudience string = ''

@description('authMode entra: the directory (tenant) that issues the tokens.')
param entraTenantId string = tenant().tenantId

@description('RELAY_MAX_BATCH_BYTES: largest request body of POST /api/events, in bytes (413 above).')
param relayMaxBatchBytes string = '4194304'

@description('RELAY_ATTEMPT_THREADS: delivery attempts one instance makes at a time (a thread and a kept-alive connection each).')
param relayAttemptThreads string = '64'

@description('RELAY_ORIGIN_SLOTS: of those, attempts to one receiver (scheme, host and port) at a time; at most relayAttemptThreads.')
param relayOriginSlots string = '32'

@description('Whole days the retry schedule spans, rounded up (the default schedule: 27.6 h, 2 days). Claim-check payload blobs (relay-payloads) are kept for RELAY_EVENT_RETENTION_DAYS plus these days, so an event replayed at the end of its retention is retried to the end of its schedule; raise it with a longer relayRetrySchedule.')
@minValue(1)
param retryScheduleDays int = 2

@description('Object id of the deploying principal, who gets Storage Table, Queue and Blob Data Contributor on the storage account (shared keys are off); azd passes AZURE_PRINCIPAL_ID. Empty: no such roles.')
param principalId string = ''

@description('What principalId is: User (a person signed in), ServicePrincipal (a pipeline signed in as an application) or Group; azd passes AZURE_PRINCIPAL_TYPE. A wrong type fails the role assignment (UnmatchedPrincipalType).')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Redundancy of the storage accounts: Standard_LRS (one datacenter), Standard_ZRS (three zones: recommended for production; about 25% more per GB and per write).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Days a deleted or overwritten blob (claim-check payloads, host state) can be restored (blob soft delete); billed as stored data meanwhile.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 7

@description('true: alerts on function failures, poison-queue growth and /api/health availability (monitoring/alerts.bicep).')
param alerts bool = true

@description('E-mail address the alerts notify (an action group); empty: the alerts fire in the portal only.')
param alertEmail string = ''

@description('true: put the app on a virtual network (Flex Consumption VNet integration), reach storage through private endpoints (blob, queue, table) and turn the storage account\'s public network access off.')
param privateNetworking bool = false

@description('Address space of the virtual network (privateNetworking only).')
param vnetAddressPrefix string = '10.20.0.0/16'

@description('Subnet the app integrates with, delegated to Microsoft.App/environments (privateNetworking only).')
param appSubnetPrefix string = '10.20.0.0/24'

@description('Subnet of the storage private endpoints (privateNetworking only).')
param privateEndpointSubnetPrefix string = '10.20.1.0/24'

@description('privateNetworking only. true: outbound traffic (deliveries, telemetry, Entra metadata) leaves through a NAT gateway with one static public IP (output NAT_PUBLIC_IP: receivers can allow-list it). false: through default outbound access, with an address that can change.')
param natGateway bool = false

@description('privateNetworking only: existing private DNS zones to use instead of creating them, e.g. {"blob": "<zone resource id>", "queue": "...", "table": "..."} (a hub that owns privatelink zones). Each must be resolvable from the virtual network.')
param privateDnsZoneIds object = {}

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var prefix = toLower(environmentName)
var tags = {
  'azd-env-name': environmentName
}

var functionAppName = 'func-${prefix}-${resourceToken}'
var planName = 'plan-${prefix}-${resourceToken}'
var identityName = 'id-${prefix}-${resourceToken}'
var deploymentIdentityName = 'id-deploy-${prefix}-${resourceToken}'
var vnetName = 'vnet-${prefix}-${resourceToken}'
// RELAY_EVENT_RETENTION_DAYS may be fractional (the app reads a number, e.g. 0.5): whole days,
// rounded up, without int() of the text itself, which fails on a decimal point.
var retentionWholePart = first(split(trim(relayEventRetentionDays), '.'))
var eventRetentionWholeDays = int(empty(retentionWholePart) ? '0' : retentionWholePart) + (contains(relayEventRetentionDays, '.') ? 1 : 0)
var payloadRetentionDays = eventRetentionWholeDays + retryScheduleDays
var logAnalyticsName = 'log-${prefix}-${resourceToken}'
var appInsightsName = 'appi-${prefix}-${resourceToken}'
var storageAccountName = 'strelay${resourceToken}'
// The deployment package lives in an account of its own, on which the app identity holds no role.
var packageStorageAccountName = 'stpkg${resourceToken}'
var deploymentContainerName = 'app-package'

// Every RELAY_* app setting the template sets; RELAY_FUNCTION_KEY is local-dev only and never set.
var relayAppSettings = {
  RELAY_RETRY_SCHEDULE: relayRetrySchedule
  RELAY_DELIVERY_TIMEOUT: relayDeliveryTimeout
  RELAY_ALLOW_PRIVATE_TARGETS: relayAllowPrivateTargets
  RELAY_MAX_EVENT_BYTES: relayMaxEventBytes
  RELAY_EVENT_RETENTION_DAYS: relayEventRetentionDays
  RELAY_AUTH: authMode
  RELAY_MAX_BATCH_BYTES: relayMaxBatchBytes
  RELAY_ATTEMPT_THREADS: relayAttemptThreads
  RELAY_ORIGIN_SLOTS: relayOriginSlots
}

// Optional RELAY_* settings, set only when given (an empty app setting reads as unset anyway).
// They are parameters so that a redeployment, which writes the whole app-settings collection,
// keeps them instead of silently removing what an operator set by hand. In entra mode, the tenant
// and Application ID URI the served connector definition (GET /api/openapi.json) signs in with:
// the values Easy Auth validates tokens against.
var relayOptionalSettings = union(
  empty(relayPublicUrl) ? {} : { RELAY_PUBLIC_URL: relayPublicUrl },
  empty(relayTokenKey) ? {} : { RELAY_TOKEN_KEY: relayTokenKey },
  empty(relayTokenKeyPrevious) ? {} : { RELAY_TOKEN_KEY_PREVIOUS: relayTokenKeyPrevious },
  (authMode != 'entra') ? {} : { RELAY_ENTRA_TENANT: entraTenantId, RELAY_ENTRA_RESOURCE: entraAudience }
)

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: identityName
    deploymentIdentityName: deploymentIdentityName
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    packageAccountName: packageStorageAccountName
    deploymentContainerName: deploymentContainerName
    payloadRetentionDays: payloadRetentionDays
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    skuName: storageSku
    softDeleteDays: blobSoftDeleteDays
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  params: {
    name: vnetName
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    storageAccountName: storage.outputs.name
    packageStorageAccountName: storage.outputs.packageAccountName
    natGateway: natGateway
    privateDnsZoneIds: privateDnsZoneIds
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    principalId: identity.outputs.principalId
    deploymentPrincipalId: identity.outputs.deploymentPrincipalId
    packageStorageAccountName: storage.outputs.packageAccountName
    deploymentContainerName: deploymentContainerName
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: functionAppName
    planName: planName
    location: location
    tags: tags
    appTags: union(tags, {
      'azd-service-name': 'relay'
    })
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    deploymentIdentityId: identity.outputs.deploymentId
    subnetId: privateNetworking ? network.outputs.appSubnetId : ''
    storageAccountName: storage.outputs.name
    packageStorageAccountName: storage.outputs.packageAccountName
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    appSettings: union(relayAppSettings, relayOptionalSettings)
  }
  // The host starts as soon as the app exists: let it find its storage roles in place.
  dependsOn: [
    rbac
  ]
}

// Easy Auth in front of the app only in entra mode (modules/easyauth.bicep).
module easyAuth 'modules/easyauth.bicep' = if (authMode == 'entra') {
  name: 'easyauth'
  params: {
    functionAppName: functionApp.outputs.name
    clientId: entraClientId
    audience: entraAudience
    tenantId: entraTenantId
  }
}

// Alerts on what an operator must hear about (monitoring/alerts.bicep).
module alerting 'modules/alerts.bicep' = if (alerts) {
  name: 'alerts'
  params: {
    prefix: '${prefix}-${resourceToken}'
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    healthUrl: '${functionApp.outputs.url}/api/health'
    alertEmail: alertEmail
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_PACKAGE_STORAGE_ACCOUNT_NAME string = storage.outputs.packageAccountName
// The address deliveries leave from (privateNetworking with natGateway); empty otherwise.
output NAT_PUBLIC_IP string = (privateNetworking && natGateway) ? network.outputs.natPublicIp : ''
