// Flex Consumption plan and the Python function app. The app runs as the user-assigned app
// identity; the deployment package lives in a blob container of a storage account of its own,
// which the platform reaches with the separate deployment identity and on which the app identity
// holds no role at all (rbac.bicep).
// Flex Consumption takes the runtime, scale and deployment source from `functionAppConfig`, and
// rejects the site properties and app settings that configured them on other plans (ARM error
// 51021 names them): no siteConfig.ftpsState, linuxFxVersion, use32BitWorkerProcess,
// netFrameworkVersion, alwaysOn and the like, no FUNCTIONS_WORKER_RUNTIME, WEBSITE_RUN_FROM_PACKAGE
// and the like (tests/test_infra.py holds the template against the whole list). Flex has no FTP
// endpoint at all, so there is no FTP state to set.

@description('Name of the function app (also its default host name).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region of the plan and the app.')
param location string

@description('Tags applied to the plan.')
param tags object = {}

@description('Tags applied to the function app (include azd-service-name for azd deploy).')
param appTags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Resource id of the user-assigned identity the platform reaches the deployment container with.')
param deploymentIdentityId string

@description('Subnet to integrate the app with (private networking); empty for none.')
param subnetId string = ''

@description('Name of the storage account (AzureWebJobsStorage and the relay storage).')
param storageAccountName string

@description('Name of the storage account that holds the deployment package (the app identity has no role on it).')
param packageStorageAccountName string

@description('Blob container of that account that holds the deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Python version (functionAppConfig.runtime.version).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Most instances the app scales out to (Flex Consumption: at least 40).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('HTTP requests one instance serves at a time (Python on Flex defaults to 1).')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 4

@description('Always-ready instances of the http group; 0 for none.')
@minValue(0)
param alwaysReadyHttpInstances int = 0

@secure()
@description('The relay\'s own settings (RELAY_*), merged over the host settings below. Secure: it may carry RELAY_TOKEN_KEY, which must not show in the deployment\'s recorded inputs.')
param appSettings object = {}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource packageStorageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: packageStorageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Identity-based AzureWebJobsStorage (host and relay alike: the relay's clients need the table
// and blob services too, not only what the host uses) and Entra-authenticated telemetry.
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccount.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageAccount.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// Always-ready instances of the `http` group (every HTTP function of the app): warm for the
// first calls, billed at the baseline rate while idle.
var alwaysReadyHttp = [
  {
    name: 'http'
    instanceCount: alwaysReadyHttpInstances
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: appTags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
      '${deploymentIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references in app settings (e.g. relayTokenKey) resolve as the app identity.
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${packageStorageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: deploymentIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // The relay is threaded: one instance serves many calls at once.
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
        alwaysReady: (alwaysReadyHttpInstances > 0) ? alwaysReadyHttp : []
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No basic (user name and password) publishing credentials: the SCM site (the deploy endpoint)
// takes Entra ID tokens only, which `func azure functionapp publish`, azd and the Azure CLI use;
// the `ftp` policy is set too, for anything that still reads it (Flex serves no FTP). Declared at
// top level with `parent:`.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// The whole app-settings collection: anything set by hand and absent here is removed on the
// next deployment, so change settings through the template parameters.
resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(hostSettings, appSettings)
}

@description('Name of the function app.')
output name string = functionApp.name

@description('Default host name of the function app.')
output defaultHostName string = functionApp.properties.defaultHostName

@description('Default URL of the function app.')
output url string = 'https://${functionApp.properties.defaultHostName}'
